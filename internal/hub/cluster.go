package hub

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/cluster"
	"tandem/protocol"
)

// Cluster mode: the hub is one node of several (Config.Cluster). What changes, and what does not:
//
//   - Two users on this node: exactly the single-node code, under the one lock, with direct pointers; nothing
//     waits on the cluster.
//   - A user of another node in a call with a user of this one is stood in for by a Session whose remote field
//     is set and whose conn (a busConn) sends over the cluster's bus to that user's node. The single-node code
//     treats it as any peer: relaying to it sends the message to the other node, which acts on it as if the
//     sender were its own user (a stand-in there too) and delivers it. Each node keeps the state of its own users;
//     the node of the user a message is for has the last word (busy, not in call, a caller's budget).
//   - What needs the shared state (a login, the user list, the first offer to a user not on this node) pauses the
//     reading of the connection that asked, runs on a goroutine of its own with a deadline, and then resumes the
//     reading: no epoll loop waits, and the connection's later messages stay behind the one that waits.
//   - A new call with a user of another node: this node finds the callee's node (one lookup), sends it the offer
//     (a Call), and waits for its Verdict, the caller's reading paused; the callee's node decides as a single
//     node would (busy, cooldown, ringing) and answers.
//   - Writes to the shared state that need no answer (who is in a call, a name freed) go in order through one
//     goroutine, fenced by the login's session id, so that a late one changes nothing it no longer owns.

// pauser is what a cluster node needs of its connections: reading that waits (ws.Conn has it).
type pauser interface {
	PauseReading()
	ResumeReading()
}

// clusterState is the hub's cluster mode.
type clusterState struct {
	b       cluster.Backend
	node    string
	timeout time.Duration
	grace   time.Duration

	writes   chan func(context.Context) // fire-and-forget writes to the shared state, in order
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
	dropped  atomic.Uint64 // writes dropped because the queue was full
	draining bool          // guarded by the hub's mu: a drain has begun (drain.go)

	timersMu sync.Mutex
	timers   map[*time.Timer]struct{} // resume graces running (NodeDown)

	// claiming: the session ids of this node's logins whose Claim has not returned yet (guarded by the hub's
	// mu; at most one per connection, whose reading waits for it). Orphans counts them as held.
	claiming map[string]struct{}
	// undoing bounds the releases of failed claims under way (undoClaim); undone waits for them at shutdown
	// (begun under timersMu, and only while timers is not nil).
	undoing chan struct{}
	undone  sync.WaitGroup
}

// maxUndoing is how many releases of failed claims may be under way at once; past it a failed claim is left to
// the backend's cleanup.
const maxUndoing = 64

// DefaultClusterTimeout is Config.ClusterTimeout's default.
const DefaultClusterTimeout = 5 * time.Second

func (h *Hub) startCluster() {
	c := &clusterState{
		b: h.cfg.Cluster, node: h.cfg.Cluster.Node(), timeout: h.cfg.ClusterTimeout, grace: h.cfg.ResumeGrace,
		writes: make(chan func(context.Context), 1<<16), stop: make(chan struct{}), stopped: make(chan struct{}),
		timers: make(map[*time.Timer]struct{}), claiming: make(map[string]struct{}), undoing: make(chan struct{}, maxUndoing),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultClusterTimeout
	}
	if c.grace <= 0 {
		c.grace = cluster.DefaultResumeGrace
	}
	// Caller ids must be unique over the cluster: each node starts its count at a random place.
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	h.nextID.Store(binary.LittleEndian.Uint64(seed[:]) &^ (1 << 63 >> 1)) // far from wrapping
	h.cl = c
	go c.writeLoop()
}

// Start joins the cluster (Config.Cluster): from then on this node receives messages from the others. It does
// nothing on a single node.
func (h *Hub) Start() error {
	if h.cl == nil {
		return nil
	}
	return h.cl.b.Start(h)
}

// Ready says whether the hub can take new users: always on a single node; in a cluster, while the shared state
// can be reached (see cluster.Backend).
func (h *Hub) Ready() error {
	if h.cl == nil {
		return nil
	}
	return h.cl.b.Ready()
}

func (c *clusterState) writeLoop() {
	defer close(c.stopped)
	for {
		select {
		case w := <-c.writes:
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			w(ctx)
			cancel()
		case <-c.stop:
			// What is queued still goes, as far as it can within one timeout.
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			for {
				select {
				case w := <-c.writes:
					w(ctx)
				default:
					return
				}
			}
		}
	}
}

// write queues a write to the shared state; it never blocks (a full queue drops it, and it reports false: the
// state is set right when the node registers its users again).
func (c *clusterState) write(w func(context.Context)) bool {
	select {
	case c.writes <- w:
		return true
	default:
		c.dropped.Add(1)
		return false
	}
}

// settle waits, for up to one timeout, until the writes queued so far have been made (a full queue, or a slow
// shared state, cuts it short). A drain settles before it closes each connection, so that what the shared state
// says of the user (the peer of a call answered a moment ago) is current when the client resumes elsewhere: its
// resume's reply names its call from there, and the call moves with it.
func (c *clusterState) settle() {
	done := make(chan struct{})
	if !c.write(func(context.Context) { close(done) }) {
		return
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-c.stop:
	}
}

// closeCluster ends cluster mode at shutdown: the queued writes go out, and the node leaves the cluster; with
// release its users' names are freed at once, without (a drain) they wait the resume grace.
func (h *Hub) closeCluster(release bool) {
	c := h.cl
	c.stopOnce.Do(func() {
		c.timersMu.Lock()
		for t := range c.timers {
			t.Stop()
		}
		c.timers = nil
		c.timersMu.Unlock()
		close(c.stop)
		<-c.stopped
		c.undone.Wait()
		_ = c.b.Close(release)
	})
}

func (h *Hub) connectCluster(s *Session) {
	p, ok := s.conn.(pauser)
	if !ok {
		panic("hub: a cluster node's connections must be able to pause their reading")
	}
	s.pauser = p
}

// localOnly reports whether name never goes to the shared state: the echo test user's, which every node has of
// its own.
func (h *Hub) localOnly(name string) bool {
	return h.cfg.EchoName != "" && fold(name) == fold(h.cfg.EchoName)
}

// holds reports whether s is logged in as name.
func (s *Session) holds(name string) bool {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	return s.name == name && h.users[name] == s
}

// notePeerLocked records in the shared state who s, a user of this node, is in a call with (its busy flag).
func (h *Hub) notePeerLocked(s *Session) {
	if s.remote != nil || s.name == "" || s.sid == "" || h.localOnly(s.name) {
		return
	}
	name, sid, peer := s.name, s.sid, ""
	if s.peer != nil {
		peer = s.peer.name
	}
	b := h.cl.b
	h.cl.write(func(ctx context.Context) { _ = b.SetPeer(ctx, name, sid, peer) })
}

// released frees name, which session sid of this node held, in the shared state, and then calls then (if not
// nil): the peers of a user who left are told once the name is free, so that what they send next finds it gone.
func (h *Hub) released(name, sid string, then func()) {
	if h.localOnly(name) || sid == "" {
		if then != nil {
			then()
		}
		return
	}
	b := h.cl.b
	if !h.cl.write(func(ctx context.Context) {
		_ = b.Release(ctx, name, sid)
		if then != nil {
			then()
		}
	}) && then != nil {
		then()
	}
}

// undoClaim frees, best-effort and in the background, what a claim that failed (its reply did not come in time)
// may have taken: fenced by the claim's session id, it frees nothing anyone else holds. Its own goroutine, not
// the queue of writes: against a slow shared state each release may take the whole timeout, which must not
// hold up the writes behind it. Past maxUndoing under way, or if this release is itself too late (it reached the
// shared state before the claim did), the backend's cleanup frees the name.
func (h *Hub) undoClaim(name, sid string) {
	c := h.cl
	select {
	case c.undoing <- struct{}{}:
	default:
		return
	}
	c.timersMu.Lock()
	if c.timers == nil { // the hub shut down (closeCluster waits for the releases begun before)
		c.timersMu.Unlock()
		<-c.undoing
		return
	}
	c.undone.Add(1)
	c.timersMu.Unlock()
	go func() {
		defer c.undone.Done()
		defer func() { <-c.undoing }()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		_ = c.b.Release(ctx, name, sid)
	}()
}

// wait runs op off the connection's reading path: reading pauses until op is done.
func (s *Session) wait(op func(ctx context.Context)) {
	s.pauser.PauseReading()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.hub.cl.timeout)
		defer cancel()
		op(ctx)
	}()
}

func (s *Session) unavailable(request, name string) {
	s.fail(protocol.CodeUnavailable, "the cluster's shared state or the other node could not be reached in time: try again", request, name)
}

// loginCluster logs s in as name through the shared state: a fresh claim, a resume (token) of a session on this
// node or another, or name_taken.
func (s *Session) loginCluster(name string, token []byte) {
	h := s.hub
	claim := cluster.Claim{Name: name, Session: newToken(), Token: string(token), NewToken: newToken(), Caller: s.id}
	// The claim counts as held (Orphans) from before it is sent until its session holds the name (claimed) or it
	// was given up: the backend's cleanup never frees a claim under way.
	h.mu.Lock()
	h.cl.claiming[claim.Session] = struct{}{}
	h.mu.Unlock()
	s.wait(func(ctx context.Context) {
		defer s.pauser.ResumeReading()
		defer func() {
			h.mu.Lock()
			delete(h.cl.claiming, claim.Session)
			h.mu.Unlock()
		}()
		res, err := h.cl.b.Claim(ctx, claim)
		switch {
		case err != nil:
			h.log.Warn("login: the cluster is unavailable", "name", name, "err", err)
			// The claim may have been done all the same (its reply came too late): it is undone.
			h.undoClaim(name, claim.Session)
			s.loginFailed(protocol.CodeUnavailable, "the server cannot log anyone in right now (its cluster is unavailable): try again in a moment")
			return
		case res.Outcome == cluster.Taken:
			h.m.loginsFailed.Inc()
			msg := "the name " + name + " is taken: choose another"
			if len(token) > 0 {
				msg = "the name " + name + " is taken, and the resume token does not match"
			}
			s.loginFailed(protocol.CodeNameTaken, msg)
			return
		}
		s.claimed(name, claim, res)
	})
}

// claimed makes s the holder of name, which the shared state gave it.
func (s *Session) claimed(name string, claim cluster.Claim, res cluster.ClaimResult) {
	h := s.hub
	type leave struct {
		to           Conn
		from, reason string
	}
	var (
		tell     []leave
		ended    []string
		replaced Conn
		envs     []sendTo
	)
	// afterUnlock does, once the hub's lock is let go, what the claim decided: envelopes to other nodes, sessions
	// ended, a replaced connection closed, peers told their call ended.
	afterUnlock := func() {
		for _, e := range envs {
			h.cl.b.Send(e.node, e.env)
		}
		h.endSessions(ended...)
		if replaced != nil {
			replaced.Close(protocol.CloseReplaced, replacedReason)
		}
		for _, l := range tell {
			h.send(l.to, func(b []byte) []byte { return protocol.AppendLeave(b, l.from, l.reason) })
		}
	}
	h.mu.Lock()
	if s.gone {
		// The connection closed (or was replaced) while its login waited: the name is freed. A resume has taken
		// it from its old session all the same, in the shared state: that session is closed too, as the resume
		// meant it to be (its peer told), so that it does not stay online holding a name the shared state has
		// freed, which someone else could then take.
		if res.Outcome == cluster.Resumed {
			if res.Old.Node != h.cl.node {
				envs = append(envs, sendTo{res.Old.Node, &cluster.Envelope{Kind: cluster.Takeover, From: name,
					FromNode: h.cl.node, FromSession: claim.Session, Caller: res.Caller, To: name,
					ToSession: res.Old.Session}})
			} else if other := h.users[name]; other != nil && other.sid == res.Old.Session {
				ps, _, sid := other.unregisterLocked()
				other.gone = true
				for _, p := range ps {
					tell = append(tell, leave{p, name, protocol.ReasonDisconnected})
				}
				ended, replaced = append(ended, sid), other.conn
			}
		}
		h.mu.Unlock()
		afterUnlock()
		h.released(name, claim.Session, nil)
		return
	}
	// A rename, or a resume of another name: the name s had is freed first, and its call ends.
	if s.name != "" {
		ps, old, sid := s.unregisterLocked()
		for _, p := range ps {
			tell = append(tell, leave{p, old, protocol.ReasonRenamed})
		}
		ended = append(ended, sid)
		h.released(old, sid, nil)
	}
	// Someone of this node under the name: the session resumed here, or (after the shared state was lost) one
	// the shared state no longer knows, which gives way.
	if other := h.users[name]; other != nil && other != s {
		if res.Outcome == cluster.Resumed && res.Old.Node == h.cl.node && res.Old.Session == other.sid {
			s.takeOverLocked(other)
			ended = append(ended, other.sid)
			other.sid = ""
			replaced = other.conn
		} else {
			ps, _, sid := other.unregisterLocked()
			other.gone = true
			for _, p := range ps {
				tell = append(tell, leave{p, name, protocol.ReasonDisconnected})
			}
			ended = append(ended, sid) // (unregisterLocked counted it out of the users online)
			other.conn.Close(protocol.CloseNameConflict, "name conflict: another connection holds the name "+name)
		}
	}
	if s.name != name { // not taken over here: the name is new on this node
		s.name, s.key = name, fold(name)
		h.users[name] = s
		h.index.ReplaceOrInsert(s)
		h.m.online.Inc()
	}
	s.token, s.sid = res.Token, claim.Session
	if res.Outcome == cluster.Resumed && res.Old.Node != h.cl.node {
		s.id = res.Caller
		// The old session is on another node: it is closed there, and the call, if any, goes on from here.
		takeover := &cluster.Envelope{Kind: cluster.Takeover, From: name, FromNode: h.cl.node, FromSession: s.sid,
			Caller: s.id, To: name, ToSession: res.Old.Session}
		envs = append(envs, sendTo{res.Old.Node, takeover})
		if res.Peer != "" && s.peer == nil {
			if res.PeerRoute.Node == h.cl.node {
				if p := h.users[res.Peer]; p != nil && p.peer != nil && p.peer.remote != nil && p.peer.name == name {
					s.peer, s.unanswered, p.peer = p, p.peer.unanswered, s
				}
			} else if res.PeerRoute.Node != "" {
				s.peer = h.newStub(res.Peer, res.PeerRoute.Node, 0, s)
				if res.PeerRoute.Node != res.Old.Node { // the Takeover tells the old node's users itself
					envs = append(envs, sendTo{res.PeerRoute.Node, &cluster.Envelope{Kind: cluster.Moved,
						From: name, FromNode: h.cl.node, FromSession: s.sid, Caller: s.id, To: res.Peer}})
				}
			}
			if s.peer != nil {
				// The old node may have ended the call already (the old connection closed just before): it then
				// tells this node so (remoteTakeover).
				takeover.Frame = []byte(res.Peer)
			}
		}
	}
	h.notePeerLocked(s)
	reply := protocol.LoginOK{Name: s.name, Token: s.token, Device: s.loginDevice}
	s.loginDevice = ""
	if s.peer != nil {
		reply.Peer = s.peer.name
	}
	if e := h.cfg.EchoName; e != "" && h.users[e] != nil {
		reply.Echo = e
	}
	if h.cfg.ICEServers != nil {
		reply.ICEServers = h.cfg.ICEServers(reply.Name, s.host, s.sid)
	}
	h.mu.Unlock()
	afterUnlock()
	s.conn.LoggedIn()
	h.m.logins.Inc()
	h.log.Debug("user logged in", "name", reply.Name, "resumed", res.Outcome == cluster.Resumed, "host", s.host)
	s.reply(func(b []byte) []byte { return protocol.AppendLoginOK(b, reply) })
}

type sendTo struct {
	node string
	env  *cluster.Envelope
}

// pendingCall is an offer of a user of this node to a user of another, waiting for the verdict of its node.
type pendingCall struct {
	callee string
	node   string
	done   chan struct{} // closed by whoever ends the wait (verdict or timeout), which resumes the reading
}

// callRemote places s's call with callee, who is not on this node: it finds callee's node, sends it the offer
// and waits for its verdict, s's reading paused meanwhile (so that what s sends next, its candidates, follows
// the offer to the node that took it).
func (s *Session) callRemote(m *protocol.Message) {
	h := s.hub
	callee := string(m.Name) // (made here: the single-node path keeps its callee on the stack)
	h.mu.Lock()
	from, sid, id := s.name, s.sid, s.id
	h.mu.Unlock()
	frame := protocol.AppendRelay(nil, protocol.TypeOffer, m.Offer, from)
	s.wait(func(ctx context.Context) {
		route, ok, err := h.cl.b.Locate(ctx, callee)
		switch {
		case err != nil:
			s.unavailable(protocol.TypeOffer, callee)
			s.pauser.ResumeReading()
			return
		case !ok || route.Node == h.cl.node: // not online (or, here, only since the lookup missed: gone again)
			s.callFailed(protocol.CodeNotOnline, protocol.TypeOffer, callee)
			s.pauser.ResumeReading()
			return
		}
		pc := &pendingCall{callee: callee, node: route.Node, done: make(chan struct{})}
		h.mu.Lock()
		if s.gone || s.name != from {
			h.mu.Unlock()
			s.pauser.ResumeReading()
			return
		}
		// Queued under the lock with s.call set: whatever this node says to the callee's node after seeing the
		// call pending (the verdict of a crossing call, crossLocked) goes after the Call, so both nodes see the
		// same crossing.
		s.call = pc
		sent := h.cl.b.Send(route.Node, &cluster.Envelope{Kind: cluster.Call, From: from, FromNode: h.cl.node,
			FromSession: sid, Caller: id, To: callee, Frame: frame})
		h.mu.Unlock()
		if sent {
			select {
			case <-pc.done:
				return // the verdict came, was acted on, and the reading resumed
			case <-ctx.Done():
			}
		}
		h.mu.Lock()
		mine := s.call == pc
		if mine {
			s.call = nil
		}
		h.mu.Unlock()
		if mine {
			s.unavailable(protocol.TypeOffer, callee)
			s.pauser.ResumeReading()
		}
	})
}

// usersCluster answers a users request from the shared state, with this node's echo user added.
func (s *Session) usersCluster(m *protocol.Message) {
	h := s.hub
	limit := m.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	if limit > maxListLimit {
		limit = maxListLimit
	}
	query := strings.TrimSpace(string(m.Query))
	prefix := fold(query)
	s.wait(func(ctx context.Context) {
		defer s.pauser.ResumeReading()
		entries, more, total, err := h.cl.b.List(ctx, prefix, limit)
		if err != nil {
			s.unavailable(protocol.TypeUsers, "")
			return
		}
		list := usersOf(entries)
		h.mu.Lock()
		list, more, total = h.withEchoLocked(list, prefix, limit, more, total)
		h.mu.Unlock()
		s.reply(func(b []byte) []byte { return protocol.AppendUsers(b, query, list, more, total) })
	})
}

// usersOf is a page of the cluster's list as the protocol's users, with room for the echo user.
func usersOf(entries []cluster.Entry) []protocol.User {
	list := make([]protocol.User, 0, len(entries)+1)
	for _, e := range entries {
		list = append(list, protocol.User{Name: e.Name, Busy: e.Busy})
	}
	return list
}

// withEchoLocked adds the echo user, when it is online on this node (every node has its own), to a page of the
// cluster's list for prefix: to the total, and to the page where it belongs.
func (h *Hub) withEchoLocked(list []protocol.User, prefix string, limit int, more bool, total int) ([]protocol.User, bool, int) {
	if echo := h.cfg.EchoName; echo != "" && h.users[echo] != nil {
		total++
		if strings.HasPrefix(fold(echo), prefix) {
			list, more = insertEcho(list, echo, limit, more)
		}
	}
	return list, more, total
}

// insertEcho puts the echo user in its place in a list in index order, keeping it within limit.
func insertEcho(list []protocol.User, echo string, limit int, more bool) ([]protocol.User, bool) {
	key := fold(echo)
	i := 0
	for i < len(list) {
		k := fold(list[i].Name)
		if k > key || k == key && list[i].Name > echo {
			break
		}
		i++
	}
	if i == len(list) && len(list) == limit {
		return list, true // beyond this page
	}
	list = append(list, protocol.User{})
	copy(list[i+1:], list[i:])
	list[i] = protocol.User{Name: echo, Echo: true}
	if len(list) > limit {
		list, more = list[:limit], true
	}
	return list, more
}

// busConn is the conn of a stand-in: what the hub sends it goes to the node of the user it stands in for.
type busConn struct {
	h     *Hub
	to    string // the user it stands in for
	route atomic.Pointer[string]
	// from is the user of this node in a call with it, and fromID that user's caller id.
	from   string
	fromID uint64
	// verdict: the stand-in of a caller whose Call is being decided: the first ringing or error sent to it is
	// the Verdict.
	verdict atomic.Bool
}

// newStub makes the stand-in for user name of node, with caller id id, in a call (or about to be) with s.
func (h *Hub) newStub(name, node string, id uint64, s *Session) *Session {
	bc := &busConn{h: h, to: name, from: s.name, fromID: s.id}
	bc.route.Store(&node)
	return &Session{hub: h, conn: bc, name: name, key: fold(name), id: id, remote: bc, peer: s, offers: offerBurst, offersAt: h.now()}
}

func (c *busConn) node() string { return *c.route.Load() }

func (c *busConn) LoggedIn()         {}
func (c *busConn) Close(int, string) {}

// Send passes msg to the user's node: a relayed message or a leave as a Message, ringing or an error as a Reply
// (or the Verdict of a Call).
func (c *busConn) Send(msg []byte) bool {
	e := &cluster.Envelope{Kind: cluster.Message, From: c.from, FromNode: c.h.cl.node, Caller: c.fromID, To: c.to, Frame: msg}
	if typ := frameType(msg); typ == protocol.TypeError || typ == protocol.TypeRinging {
		e.Kind = cluster.Reply
		if c.verdict.Swap(false) {
			e.Kind, e.Accepted = cluster.Verdict, typ == protocol.TypeRinging
		}
	}
	if !c.h.cl.b.Send(c.node(), e) {
		c.h.Undelivered(e) // its sender is told
		return false
	}
	return true
}

// ringingLocked tells the caller it stands in for that its call rings (the Verdict of its Call, or a Reply),
// with the hub's lock held: it is queued before anything the callee sends the caller once the lock is let go.
// (Send is not used: it may take the lock. A verdict that cannot be sent has no one else to tell: the caller's
// node answers its caller when the wait for it ends.)
func (c *busConn) ringingLocked(callee string) {
	e := &cluster.Envelope{Kind: cluster.Reply, From: c.from, FromNode: c.h.cl.node, Caller: c.fromID, To: c.to,
		Frame: protocol.AppendRinging(nil, callee)}
	if c.verdict.Swap(false) {
		e.Kind, e.Accepted = cluster.Verdict, true
	}
	c.h.cl.b.Send(c.node(), e)
}

// frameType is the type of a message the hub built ({"type":"...).
func frameType(msg []byte) string {
	const prefix = `{"type":"`
	if !bytes.HasPrefix(msg, []byte(prefix)) {
		return ""
	}
	rest := msg[len(prefix):]
	if i := bytes.IndexByte(rest, '"'); i >= 0 {
		return string(rest[:i])
	}
	return ""
}

// Deliver implements cluster.Local: it acts on a message from another node.
func (h *Hub) Deliver(e *cluster.Envelope) {
	switch e.Kind {
	case cluster.Message, cluster.Call:
		h.remoteMessage(e)
	case cluster.Reply:
		h.mu.Lock()
		t := h.users[e.To]
		h.mu.Unlock()
		switch {
		case t != nil:
			t.conn.Send(e.Frame)
		case !e.Forwarded:
			h.forward(e)
		}
	case cluster.Verdict:
		h.remoteVerdict(e)
	case cluster.Takeover:
		h.remoteTakeover(e)
	case cluster.Moved:
		h.mu.Lock()
		if t := h.users[e.To]; t != nil && t.peer != nil && t.peer.remote != nil && t.peer.name == e.From {
			node := e.FromNode
			t.peer.remote.route.Store(&node)
			t.peer.id = e.Caller
		}
		h.mu.Unlock()
	}
}

// remoteMessage acts on a message a user of another node sent a user of this one, as the single-node code would
// with the sender's stand-in as the sender.
func (h *Hub) remoteMessage(e *cluster.Envelope) {
	var m protocol.Message
	if !readRelayed(e.Frame, &m) {
		if err := protocol.Decode(e.Frame, &m); err != nil {
			h.log.Warn("cluster: undecodable message from another node", "node", e.FromNode, "err", err)
			return
		}
	}
	h.mu.Lock()
	t := h.users[e.To]
	var s *Session
	if t != nil && t.peer != nil && t.peer.remote != nil && t.peer.name == e.From {
		s = t.peer
		if node := e.FromNode; s.remote.node() != node {
			s.remote.route.Store(&node)
		}
		if s.id == 0 {
			s.id = e.Caller
		}
	}
	h.mu.Unlock()
	if t == nil && !e.Forwarded && e.Kind == cluster.Message {
		h.forward(e) // the recipient moved (a resume on another node): it goes after it, once
		return
	}
	if s == nil {
		// Not in a call with the sender (or the recipient is not here): a stand-in of its own answers it.
		s = &Session{hub: h, name: e.From, key: fold(e.From), id: e.Caller, offers: offerBurst, offersAt: h.now()}
		bc := &busConn{h: h, to: e.From}
		node := e.FromNode
		bc.route.Store(&node)
		if t != nil {
			bc.from, bc.fromID = t.name, t.id
		} else {
			bc.from = e.To
		}
		s.conn, s.remote = bc, bc
	}
	if e.Kind == cluster.Call {
		s.remote.verdict.Store(true)
	}
	m.Name, m.HasName = []byte(e.To), true
	switch string(m.Type) {
	case protocol.TypeOffer:
		if e.Kind == cluster.Message && s.peer == nil {
			// An offer within a call that has ended here meanwhile: it does not start a new one.
			s.callFailed(protocol.CodeNotInCall, protocol.TypeOffer, e.To)
			break
		}
		s.offer(&m)
	case protocol.TypeAnswer:
		s.relay(protocol.TypeAnswer, &m, m.Answer)
	case protocol.TypeCandidate:
		s.relay(protocol.TypeCandidate, &m, m.Candidate)
	case protocol.TypeLeave:
		s.leave(&m)
	}
	if e.Kind == cluster.Call && s.remote.verdict.Swap(false) {
		// Taken without a word for the caller (the callee had offered back: glare).
		h.cl.b.Send(s.remote.node(), &cluster.Envelope{Kind: cluster.Verdict, Accepted: s.peer != nil,
			From: e.To, FromNode: h.cl.node, To: e.From})
	}
}

// readRelayed reads a frame the sending node built with protocol.AppendRelay (an offer, answer or candidate:
// {"type":T,"T":payload,"name":from}) or protocol.AppendLeave ({"type":"leave","name":from,"reason":R}) into m as
// protocol.Decode would (the name aside, which the receiving node sets), without scanning the payload again:
// the sending node decoded and validated it when its user sent it, and built the frame around it. It reports
// false for a frame of any other shape (a node of another version may build them otherwise): Decode reads it.
func readRelayed(frame []byte, m *protocol.Message) bool {
	const prefix = `{"type":"`
	rest, ok := bytes.CutPrefix(frame, []byte(prefix))
	if !ok {
		return false
	}
	var typ string
	switch {
	case bytes.HasPrefix(rest, []byte(`offer","offer":`)):
		typ = protocol.TypeOffer
	case bytes.HasPrefix(rest, []byte(`answer","answer":`)):
		typ = protocol.TypeAnswer
	case bytes.HasPrefix(rest, []byte(`candidate","candidate":`)):
		typ = protocol.TypeCandidate
	case bytes.HasPrefix(rest, []byte(`leave","name":"`)):
		// The reason is the last field, a plain word (no escapes): its quote is the one before the final "}.
		i := bytes.LastIndex(rest, []byte(`","reason":"`))
		if i < 0 || !bytes.HasSuffix(rest, []byte(`"}`)) {
			return false
		}
		reason := rest[i+len(`","reason":"`) : len(rest)-2]
		if bytes.IndexByte(reason, '"') >= 0 || bytes.IndexByte(reason, '\\') >= 0 {
			return false
		}
		m.Type, m.Reason = rest[:len(protocol.TypeLeave)], reason
		return true
	default:
		return false
	}
	// The payload runs to the name, the last field: a JSON string, in which the bytes ,"name":" cannot occur
	// (a quote in it is escaped), so its start is the last of them.
	payload := rest[2*len(typ)+len(`","":`):]
	i := bytes.LastIndex(payload, []byte(`,"name":"`))
	if i <= 0 || !bytes.HasSuffix(payload, []byte(`"}`)) {
		return false
	}
	payload = payload[:i]
	switch {
	case payload[0] == '{' && payload[len(payload)-1] == '}':
	case typ == protocol.TypeCandidate && string(payload) == "null":
	default:
		return false
	}
	m.Type = rest[:len(typ)]
	switch typ {
	case protocol.TypeOffer:
		m.Offer = payload
	case protocol.TypeAnswer:
		m.Answer = payload
	default:
		m.Candidate = payload
	}
	return true
}

// crossed is what offer does about glare across nodes (crossLocked).
type crossed struct {
	lost  bool   // the callee's own call lost: its offer, on its way to the caller's node, accepts this call
	ended Conn   // the peer of the callee's previous call, to be told it ended
	by    string // the callee's name, for that leave
}

// crossLocked settles glare across nodes: s, the stand-in of a caller of another node, brings its Call to t,
// whose own call to that caller is waiting for its verdict. The two offers crossed between the nodes, and each
// node sees the same crossing (callRemote queues a Call with the lock held and the call pending, and the verdict
// of a call that rings goes before the lock is let go), so both apply one rule: the call of the user whose name
// sorts first (byte order, as the web client settles glare) is the call, and the other's offer accepts it, as
// the second of two offers does on one node. The winner gets ringing, the other only the winner's offer.
//
// When s's call wins, the caller of offer places it as a new call and then marks it accepted (lost). When t's
// wins, s and t are made a pair here, accepted, and offer relays s's offer to t as within a call (its verdict
// says accepted, without a word for the caller). Either way t's previous call, if any, ends, as calling someone
// else ends it.
func (s *Session) crossLocked(t *Session) (c crossed) {
	h := s.hub
	if s.remote == nil || !s.remote.verdict.Load() || s.peer != nil || t.call == nil || t.call.callee != s.name {
		return c
	}
	if p := t.peer; p != nil {
		t.callEndedLocked(p, t.name, protocol.ReasonHangup)
		endCallLocked(t, p)
		c.ended, c.by = p.conn, t.name
	}
	t.forgetStrangerLocked(s.id) // t is calling s: s may reach t
	if s.name < t.name {
		c.lost = true
		return c
	}
	s.remote.from, s.remote.fromID = t.name, t.id
	t.peer, s.peer, t.unanswered, s.unanswered = s, t, false, false
	h.notePeerLocked(t)
	return c
}

// tell tells the peer of the callee's previous call that it ended.
func (c crossed) tell(h *Hub) {
	if c.ended != nil {
		h.send(c.ended, func(b []byte) []byte { return protocol.AppendLeave(b, c.by, protocol.ReasonHangup) })
	}
}

// forward sends a message for a user who is no longer on this node to the node that has the user now, if any.
func (h *Hub) forward(e *cluster.Envelope) {
	f := *e
	f.Frame = append([]byte(nil), e.Frame...)
	f.Forwarded = true
	c := h.cl
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		if route, ok, err := c.b.Locate(ctx, f.To); err == nil && ok && route.Node != c.node {
			c.b.Send(route.Node, &f)
		}
	}()
}

// refuseRemote answers a message for a user who is not on this node and not in a call with the sender: not in
// call if the user is online on another node, not online otherwise (as one node would).
func (s *Session) refuseRemote(request, name string) {
	h := s.hub
	s.wait(func(ctx context.Context) {
		defer s.pauser.ResumeReading()
		_, ok, err := h.cl.b.Locate(ctx, name)
		switch {
		case err != nil:
			s.unavailable(request, name)
		case ok:
			s.callFailed(protocol.CodeNotInCall, request, name)
		default:
			s.callFailed(protocol.CodeNotOnline, request, name)
		}
	})
}

// remoteVerdict acts on the answer to a call a user of this node placed with a user of another: the two are now
// in a call (the caller is told ringing), or the caller is told why not.
func (h *Hub) remoteVerdict(e *cluster.Envelope) {
	var ended Conn
	h.mu.Lock()
	t := h.users[e.To]
	var pc *pendingCall
	if t != nil && t.call != nil && t.call.callee == e.From {
		pc, t.call = t.call, nil
	}
	if pc == nil {
		inCall := t != nil && t.peer != nil && t.peer.remote != nil && t.peer.name == e.From
		h.mu.Unlock()
		if e.Accepted && !inCall { // too late: the caller was told the call failed, so it does not take place
			h.cl.b.Send(e.FromNode, &cluster.Envelope{Kind: cluster.Message, From: e.To, FromNode: h.cl.node, To: e.From,
				Frame: protocol.AppendLeave(nil, e.To, protocol.ReasonCancelled)})
		}
		return
	}
	from := t.name
	if e.Accepted {
		// t's call rang the callee: t's word that the callee may reach t, as on one node (offer): a cooldown or
		// a spent budget t keeps for calls from the callee is forgotten.
		if e.Caller != 0 {
			t.forgetStrangerLocked(e.Caller)
		}
		if p := t.peer; p != nil && p.remote != nil && p.name == e.From && p.unanswered && p.peer == t && len(e.Frame) == 0 {
			// The callee's call rang t first, and t's offer (this call) was taken there as accepting it: it is
			// accepted here too, as on one node.
			t.callAnsweredLocked(p)
			p.unanswered = false
			t.forgetStrangerLocked(p.id)
		} else if p == nil || p.remote == nil || p.name != e.From {
			if p != nil { // calling someone else ends the call t was in
				endCallLocked(t, p)
				ended = p.conn
			}
			stub := h.newStub(e.From, e.FromNode, e.Caller, t)
			t.peer, stub.peer, t.unanswered = stub, t, true
			h.notePeerLocked(t)
		}
	}
	h.mu.Unlock()
	if ended != nil {
		h.send(ended, func(b []byte) []byte { return protocol.AppendLeave(b, from, protocol.ReasonHangup) })
	}
	if len(e.Frame) > 0 {
		t.conn.Send(e.Frame)
	}
	if code := errorCode(e.Frame); code != "" {
		h.m.errors(code).Inc()
	}
	close(pc.done)
	t.pauser.ResumeReading()
}

// errorCode is the code of an error message the hub built.
func errorCode(msg []byte) string {
	const prefix = `{"type":"error","code":"`
	if !bytes.HasPrefix(msg, []byte(prefix)) {
		return ""
	}
	rest := msg[len(prefix):]
	if i := bytes.IndexByte(rest, '"'); i >= 0 {
		return string(rest[:i])
	}
	return ""
}

// remoteTakeover closes a session of this node that was resumed on another: its connection is closed (4000), its
// call goes on from the new node.
func (h *Hub) remoteTakeover(e *cluster.Envelope) {
	h.mu.Lock()
	old := h.users[e.To]
	if old == nil || old.sid != e.ToSession {
		h.mu.Unlock()
		// The session is gone already (its connection closed before the resume reached this node), and its call
		// ended with it: the peer was told, or will be once the name is released.
		h.takenOverCallEnded(e)
		return
	}
	// The call the new session took over from the shared state (the peer its client was told of, named in
	// Frame) goes on. It may have ended here meanwhile (the peer left, or its connection closed, before the
	// resume reached this node): the new session is told. And a call the old session has that the new one did not
	// take over (placed after the shared state was read for the resume) ends: its peer is told.
	ended := len(e.Frame) > 0 && (old.peer == nil || old.peer.name != string(e.Frame))
	var cut Conn
	if p := old.peer; p != nil && p.name != string(e.Frame) {
		old.callEndedLocked(p, old.name, protocol.ReasonDisconnected)
		endCallLocked(old, p)
		cut = p.conn
	}
	delete(h.users, old.name)
	h.index.Delete(old)
	h.m.online.Dec()
	if p := old.peer; p != nil && p.remote == nil && p.peer == old {
		// The peer is a user of this node: it now talks to the new session, on the other node.
		stub := h.newStub(old.name, e.FromNode, e.Caller, p)
		stub.peer, stub.unanswered, stub.strangers = p, old.unanswered, old.strangers
		p.peer = stub
	}
	for c := range old.callers { // (the echo user never moves; for completeness)
		endCallLocked(old, c)
	}
	sid := old.sid
	old.name, old.key, old.token, old.sid, old.peer, old.callers = "", "", "", "", nil, nil
	old.unanswered, old.strangers, old.gone = false, nil, true
	h.mu.Unlock()
	h.endSessions(sid)
	old.conn.Close(protocol.CloseReplaced, replacedReason)
	if ended {
		h.takenOverCallEnded(e)
	}
	if cut != nil {
		h.send(cut, func(b []byte) []byte { return protocol.AppendLeave(b, e.To, protocol.ReasonDisconnected) })
	}
}

// takenOverCallEnded tells the session that took over a session of this node (Takeover e) that the call it took
// over with it, with the peer named in e.Frame, had ended here: with a leave as if from the peer (reason
// disconnected), which its node acts on as on any leave from a user of another node. Nothing when it took over
// no call.
func (h *Hub) takenOverCallEnded(e *cluster.Envelope) {
	if len(e.Frame) == 0 {
		return
	}
	peer := string(e.Frame)
	h.cl.b.Send(e.FromNode, &cluster.Envelope{Kind: cluster.Message, From: peer, FromNode: h.cl.node, To: e.From,
		Frame: protocol.AppendLeave(nil, peer, protocol.ReasonDisconnected)})
}

// NodeDown implements cluster.Local: the calls of this node's users with users of node end after the resume
// grace, unless those users moved to another node meanwhile.
func (h *Hub) NodeDown(node string) {
	h.mu.Lock()
	var affected []*Session
	for _, s := range h.users {
		if p := s.peer; p != nil && p.remote != nil && p.remote.node() == node {
			affected = append(affected, s)
		}
	}
	h.mu.Unlock()
	if len(affected) == 0 {
		return
	}
	h.log.Info("cluster: a node is gone; its users' calls end unless they resume elsewhere", "node", node,
		"calls", len(affected), "grace", h.cl.grace)
	c := h.cl
	var t *time.Timer
	t = time.AfterFunc(c.grace, func() {
		c.timersMu.Lock()
		if c.timers == nil { // the hub shut down
			c.timersMu.Unlock()
			return
		}
		delete(c.timers, t)
		c.timersMu.Unlock()
		if c.b.Alive(node) {
			return // it came back (Redis had lost its data, and the node registered again)
		}
		for _, s := range affected {
			h.mu.Lock()
			p := s.peer
			gone := p != nil && p.remote != nil && p.remote.node() == node
			if gone {
				endCallLocked(s, p)
			}
			h.mu.Unlock()
			if gone {
				h.send(s.conn, func(b []byte) []byte { return protocol.AppendLeave(b, p.name, protocol.ReasonDisconnected) })
			}
		}
	})
	c.timersMu.Lock()
	if c.timers != nil {
		c.timers[t] = struct{}{}
	} else {
		t.Stop()
	}
	c.timersMu.Unlock()
}

// Registrations implements cluster.Local.
func (h *Hub) Registrations() []cluster.Registration {
	h.mu.Lock()
	defer h.mu.Unlock()
	regs := make([]cluster.Registration, 0, len(h.users))
	for name, s := range h.users {
		if h.localOnly(name) || s.sid == "" {
			continue
		}
		r := cluster.Registration{Name: name, Session: s.sid, Token: s.token, Caller: s.id}
		if s.peer != nil {
			r.Peer = s.peer.name
		}
		regs = append(regs, r)
	}
	return regs
}

// Orphans implements cluster.Local: a record is held while its session holds the name here, or while its claim
// is under way (claiming); a session id is never used again once its claim returned without making it hold the
// name, or once it let the name go.
func (h *Hub) Orphans(recs []cluster.Record) []cluster.Record {
	var orphans []cluster.Record
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range recs {
		if s := h.users[r.Name]; s != nil && s.sid == r.Session && s.sid != "" {
			continue
		}
		if _, ok := h.cl.claiming[r.Session]; ok {
			continue
		}
		orphans = append(orphans, r)
	}
	return orphans
}

// Holders implements cluster.Local: in the order of the users index (folded name, then name), from after the
// name after.
func (h *Hub) Holders(after string, limit int) []cluster.Record {
	recs := make([]cluster.Record, 0, limit)
	from := &Session{key: fold(after), name: after}
	echo := "\x00" // no folded name
	if h.cfg.EchoName != "" {
		echo = fold(h.cfg.EchoName) // localOnly
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.index.AscendGreaterOrEqual(from, func(s *Session) bool {
		if after != "" && s.key == from.key && s.name == after {
			return true
		}
		if len(recs) == limit {
			return false
		}
		if s.sid != "" && s.key != echo {
			recs = append(recs, cluster.Record{Name: s.name, Session: s.sid})
		}
		return true
	})
	return recs
}

// Evict implements cluster.Local: the session is closed (4001), and its connection's closing ends its call.
func (h *Hub) Evict(name, session string) {
	h.mu.Lock()
	s := h.users[name]
	if s == nil || s.sid != session {
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.log.Warn("cluster: the shared state gives this session's name to another session; this one gives way", "name", name)
	s.conn.Close(protocol.CloseNameConflict, "name conflict: another connection holds the name "+name)
}

// Undelivered implements cluster.Local: the sender of a message that could not reach its recipient's node is told.
func (h *Hub) Undelivered(e *cluster.Envelope) {
	if e.Kind != cluster.Message {
		return // a Call's caller hears of it when its wait ends; replies and notices have no one to tell
	}
	h.mu.Lock()
	s := h.users[e.From]
	h.mu.Unlock()
	if s != nil {
		s.fail(protocol.CodeUnavailable, "your "+frameType(e.Frame)+" did not reach "+e.To+": the server "+e.To+
			" is on could not be reached", frameType(e.Frame), e.To)
	}
}
