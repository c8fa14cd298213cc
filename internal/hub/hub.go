// Package hub is tandem's router: who is online, who is in a call with whom, and where each message goes. It
// reaches connections only through the small Conn interface and has no network code of its own.
package hub

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"

	"tandem/internal/cluster"
	"tandem/protocol"
)

// Conn is how the hub reaches one client connection.
type Conn interface {
	// Send queues one message for the client. It must not block and must not keep msg after it returns. It
	// reports false when the message could not be taken (the connection is closed or overflowed).
	Send(msg []byte) bool
	// Close closes the connection with a WebSocket close code and a reason.
	Close(code int, reason string)
	// LoggedIn tells the transport that the connection has logged in: from then on it is no longer held to the
	// login deadline nor counted among the connections that have not logged in (see docs/limits.md).
	LoggedIn()
}

// Config configures a Hub. A zero field takes the default named beside it.
type Config struct {
	// Rate is how many messages a second one connection may send on average; 0 means no limit.
	Rate float64
	// Burst is how many messages a connection may send at once above Rate; default 1000.
	Burst int
	// ICEServers, if not nil, gives the ICE servers handed to user name in the login reply; host is the host the
	// client used to reach tandem, and session identifies this login (the credentials it mints are bound to it):
	// an unguessable id, new for every login, rename and resume. It is called with the hub's lock held (so that
	// SessionEnded for the same session cannot come first): it must be quick and must not call the Hub.
	ICEServers func(name, host, session string) []protocol.ICEServer
	// SessionEnded, if not nil, is told when a login whose id was given to ICEServers ends (the user logged out,
	// renamed, was replaced by a resume, or disconnected), so credentials bound to it stop working.
	SessionEnded func(session string)
	// EchoName is the name of the built-in echo test user, marked as such in user lists; "" for none.
	EchoName string
	// EchoToken, if not empty, reserves EchoName for the built-in echo peer: a login as EchoName must carry it as
	// its token.
	EchoToken string
	// EchoMaxCalls is how many calls the echo user may be in at once; default 16. An offer beyond it is refused
	// as busy ("the test line is full").
	EchoMaxCalls int
	// CallCooldown is how long a caller whose call was declined, or rang unanswered (no_answer), must wait
	// before calling the same user again; default 30 s, negative for none.
	CallCooldown time.Duration
	// Auth, if not nil, checks the credentials of every login but the echo peer's (internal/auth, every mode but
	// open): only the users it lets in get a name, and nothing but login is answered before login.
	Auth Authenticator
	// Logger receives the hub's logs; default slog.Default().
	Logger *slog.Logger
	// Metrics, if not nil, is told about messages and errors.
	Metrics *Metrics
	// Calls, if not nil, is told when calls ring, are answered and end, and takes quality reports (calls.go).
	Calls CallEvents

	// Cluster, if not nil, makes the hub one node of several that act as one server (cluster.go): names, the
	// user list and calls with users on other nodes go through it. Nil: a single node, everything in memory.
	// The Conns of a cluster node must also be able to pause their reading (PauseReading, ResumeReading).
	Cluster cluster.Backend
	// ClusterTimeout bounds a round trip to the cluster's shared state or another node (a login, a list, a call
	// to a user on another node); default 5 s. What times out is answered with the error code unavailable.
	ClusterTimeout time.Duration
	// ResumeGrace is how long a call with a user of a node that died waits for that user to resume on another
	// node before it ends; default cluster.DefaultResumeGrace. (Single node: a call ends when a connection closes.)
	ResumeGrace time.Duration
	// WatchQueries bounds the different user lists watched at once (presence.go); default DefaultWatchQueries.
	// A watch request for a new list beyond it is answered as an ordinary request, without watching.
	WatchQueries int
}

// Defaults of Config.
const (
	DefaultEchoMaxCalls = 16
	DefaultCallCooldown = 30 * time.Second
)

// replacedReason is the reason of the close (protocol.CloseReplaced) that ends a connection whose name a resume
// took over, here or on another node.
const replacedReason = "replaced: this name logged in from another connection"

// Hub routes messages between the sessions of logged-in users.
type Hub struct {
	cfg Config
	log *slog.Logger
	m   *Metrics

	mu     sync.Mutex
	holder atomic.Pointer[Session] // the session whose message mu is held for (lockHub), for releaseOnPanic
	users  map[string]*Session     // by name
	index  *btree.BTreeG[*Session] // by folded name, for listing and searching
	nextID atomic.Uint64           // the last Session.id given
	buf    sync.Pool               // *[]byte scratch buffers for outgoing messages

	// now is the hub's clock, in nanoseconds since an arbitrary start (monotonic); tests replace it.
	now func() int64

	cl *clusterState // nil on a single node
	pr *presence     // watched user lists (presence.go); nil until the first watch
}

// New returns a Hub for cfg.
func New(cfg Config) *Hub {
	if cfg.Burst <= 0 {
		cfg.Burst = 1000
	}
	if cfg.EchoMaxCalls <= 0 {
		cfg.EchoMaxCalls = DefaultEchoMaxCalls
	}
	if cfg.CallCooldown == 0 {
		cfg.CallCooldown = DefaultCallCooldown
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	h := &Hub{
		cfg:   cfg,
		log:   cfg.Logger,
		m:     cfg.Metrics,
		users: make(map[string]*Session),
		index: btree.NewG(16, func(a, b *Session) bool {
			if a.key != b.key {
				return a.key < b.key
			}
			return a.name < b.name
		}),
	}
	h.buf.New = func() any { b := make([]byte, 0, 4096); return &b }
	start := time.Now()
	h.now = func() int64 { return int64(time.Since(start)) }
	if cfg.Cluster != nil {
		h.startCluster()
	}
	return h
}

// Session is one connection's state in the hub. Its methods are called by the connection's reading goroutine,
// one at a time.
type Session struct {
	hub  *Hub
	host string

	// Guarded by hub.mu.
	conn  Conn
	name  string // "" until logged in
	key   string // folded name, for the index
	token string
	sid   string // the login's session id (Config.ICEServers), "" when not logged in or already ended
	peer  *Session
	gone  bool // closed, or replaced by a resume: it will never log in again
	// drained: its connection was closed by a drain (drain.go), which keeps its name and call for its resume
	// on another node.
	drained bool
	// callers is the echo user's: the users in a call with it, any number at once (each has it as peer).
	callers map[*Session]struct{}
	// id identifies the caller behind this session to the users it calls (their strangers records): it is
	// given at Connect and taken over by a resume, so that neither a rename nor a resume starts afresh.
	id uint64
	// unanswered says this session placed its call with peer and the callee has not accepted it yet (answered,
	// or offered back): what it sends the callee is counted against the callee's strangers record for it.
	unanswered bool
	// strangers are this session's records of callers it has not accepted (strangers.go).
	strangers []stranger
	// Renegotiation offers within a call: a token bucket (see allowOfferLocked).
	offers   float64
	offersAt int64

	// Rate limiting, touched only by the reading goroutine.
	allowance float64
	lastMsg   int64
	unlimited bool // the echo peer's connection, which logged in with the echo token
	// record is the CallEvents record of this session's call, or of its last one (calls.go); guarded by hub.mu.
	record Call

	// Cluster mode (cluster.go): remote is set on the stand-in of a user of another node in a call with a user
	// of this one (its conn is remote); call is an offer of this session's waiting for the verdict of the
	// callee's node; pauser pauses this connection's reading while it waits on the cluster.
	remote *busConn
	call   *pendingCall
	pauser pauser
	// loginDevice is the device credential (Config.Auth) of a login waiting on the cluster, for its reply.
	loginDevice string

	missed missedCalls // who called while this user was busy (missed.go)
	// watch is the user list this connection watches (presence.go), nil for none; guarded by hub.mu.
	watch *watcher
}

// Connect registers a new connection; host is the host the client reached tandem by (for ICE server URLs).
func (h *Hub) Connect(c Conn, host string) *Session {
	h.m.connections.Inc()
	s := &Session{hub: h, host: host, conn: c, id: h.nextID.Add(1), allowance: float64(h.cfg.Burst), offers: offerBurst, offersAt: h.now()}
	if h.cl != nil {
		h.connectCluster(s)
	}
	return s
}

// Online returns how many users are logged in.
func (h *Hub) Online() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.users)
}

// Shutdown tells every user in a call that the call is over because the server is stopping, and ends every
// login's session (Config.SessionEnded). The connections are closed by their owner afterwards.
func (h *Hub) Shutdown() {
	h.stopPresence() // presence.go
	h.mu.Lock()
	draining := h.drainingLocked()
	h.mu.Unlock()
	if draining {
		h.shutdownDrained() // the calls go on from other nodes
		return
	}
	type note struct {
		to   Conn
		from string
	}
	var notes []note
	var ended []*Session
	var sids []string
	h.mu.Lock()
	for _, s := range h.users {
		if s.peer != nil {
			notes = append(notes, note{s.conn, s.peer.name})
			if s.peer.remote != nil { // a user of another node: its node tells it
				notes = append(notes, note{s.peer.conn, s.name})
			}
			ended = append(ended, s)
		}
		if s.sid != "" {
			sids = append(sids, s.sid)
			s.sid = ""
		}
	}
	// The calls are over: the connections closing next must not report them again as "disconnected".
	for _, s := range ended {
		if s.peer != nil {
			s.callEndedLocked(s.peer, "", protocol.ReasonShutdown)
			endCallLocked(s, s.peer)
		}
	}
	h.mu.Unlock()
	h.endSessions(sids...)
	for _, n := range notes {
		h.send(n.to, func(b []byte) []byte { return protocol.AppendLeave(b, n.from, protocol.ReasonShutdown) })
	}
	if h.cl != nil {
		h.closeCluster(true)
	}
}

// endSessions tells Config.SessionEnded that these logins are over.
func (h *Hub) endSessions(sids ...string) {
	if h.cfg.SessionEnded == nil {
		return
	}
	for _, sid := range sids {
		if sid != "" {
			h.cfg.SessionEnded(sid)
		}
	}
}

// send builds a message in a scratch buffer and hands it to c.
func (h *Hub) send(c Conn, build func([]byte) []byte) bool {
	bp := h.buf.Get().(*[]byte)
	b := build((*bp)[:0])
	ok := c.Send(b)
	if cap(b) <= 64<<10 {
		*bp = b
		h.buf.Put(bp)
	}
	return ok
}

func (s *Session) reply(build func([]byte) []byte) { s.hub.send(s.conn, build) }

func (s *Session) fail(code, message, request, name string) {
	s.hub.m.errors(code).Inc()
	s.reply(func(b []byte) []byte { return protocol.AppendError(b, code, message, request, name) })
}

// lockHub takes the hub's lock to handle one of s's messages, and notes that it is held for s.
func (s *Session) lockHub() {
	s.hub.mu.Lock()
	s.hub.holder.Store(s)
}

func (s *Session) unlockHub() {
	s.hub.holder.Store(nil)
	s.hub.mu.Unlock()
}

// releaseOnPanic, deferred where the transport calls the session, gives back the hub's lock if a panic (a bug)
// left it held for s, and panics on: the transport closes this connection alone (1011) and logs the panic, and
// everyone else goes on instead of waiting for the lock forever. What the panic left half done in the hub's state
// stays so; the hub's fuzz target checks that no input gets there.
func (s *Session) releaseOnPanic() {
	if v := recover(); v != nil {
		if s.hub.holder.Load() == s {
			s.hub.holder.Store(nil)
			s.hub.mu.Unlock()
		}
		panic(v)
	}
}

// OnText handles one message from the client.
func (s *Session) OnText(data []byte) {
	defer s.releaseOnPanic()
	if !s.allow() {
		s.fail(protocol.CodeRateLimited, "too many messages: slow down (this one was not delivered)", "", "")
		return
	}
	var m protocol.Message
	if err := protocol.Decode(data, &m); err != nil {
		de := err.(*protocol.DecodeError)
		s.fail(de.Code, de.Message, de.Type, "")
		return
	}
	switch string(m.Type) {
	case protocol.TypeLogin:
		s.login(&m)
	case protocol.TypeOffer:
		s.offer(&m)
	case protocol.TypeAnswer:
		s.relay(protocol.TypeAnswer, &m, m.Answer)
	case protocol.TypeCandidate:
		s.relay(protocol.TypeCandidate, &m, m.Candidate)
	case protocol.TypeLeave:
		s.leave(&m)
	case protocol.TypeUsers:
		s.users(&m)
	case protocol.TypeQuality:
		s.quality(&m)
	default:
		s.fail(protocol.CodeUnknownType, "Command not found: "+string(m.Type), string(m.Type), "")
	}
}

// OnBinary refuses a binary message.
func (s *Session) OnBinary() {
	s.fail(protocol.CodeBinaryNotSupported, "binary messages are not supported: send JSON text", "", "")
}

// OnTooLarge tells the client its message was over the limit; the connection then closes.
func (s *Session) OnTooLarge(limit int) {
	s.fail(protocol.CodeTooLarge, "message too large: the limit is "+strconv.Itoa(limit)+" bytes", "", "")
}

// OnClose frees the session's name and ends its call.
func (s *Session) OnClose() {
	defer s.releaseOnPanic()
	h := s.hub
	s.lockHub()
	s.gone = true
	h.unwatchLocked(s)
	if s.name != "" && (s.drained || h.drainingLocked()) && !h.localOnly(s.name) {
		// A drain: the name and the call stay, for the user's resume on another node (drain.go).
		s.drained = true
		s.unlockHub()
		h.m.connections.Dec()
		return
	}
	peers, name, sid := s.unregisterLocked()
	s.unlockHub()
	h.m.connections.Dec()
	h.endSessions(sid)
	if name != "" {
		h.log.Debug("user left", "name", name, "calls_ended", len(peers))
	}
	tell := func() {
		for _, peer := range peers {
			h.send(peer, func(b []byte) []byte { return protocol.AppendLeave(b, name, protocol.ReasonDisconnected) })
		}
	}
	if h.cl != nil && name != "" {
		h.released(name, sid, tell) // the peers hear of it once the name is free in the cluster
		return
	}
	tell()
}

// unregisterLocked frees s's name, ends its call (the echo user's calls) and forgets the callers it had not
// accepted; it returns the connections to tell, the name, and the session id to end.
func (s *Session) unregisterLocked() (tell []Conn, name, sid string) {
	name, sid = s.name, s.sid
	if name == "" {
		return nil, "", ""
	}
	h := s.hub
	if h.users[name] == s {
		delete(h.users, name)
		h.index.Delete(s)
		h.m.online.Dec()
		h.presenceLocked(s.key, false)
	}
	s.name, s.key, s.token, s.sid, s.strangers = "", "", "", "", nil
	if p := s.peer; p != nil {
		s.callEndedLocked(p, name, s.closeReasonLocked())
		endCallLocked(s, p)
		tell = append(tell, p.conn)
	}
	for c := range s.callers {
		s.callEndedLocked(c, name, s.closeReasonLocked())
		endCallLocked(s, c)
		tell = append(tell, c.conn)
	}
	return tell, name, sid
}

// The echo test user (Config.EchoName) may be in calls with any number of users at once: each caller has the
// echo session as its peer, and the echo session keeps them in its callers instead of having a peer of its own.

func (h *Hub) isEchoLocked(t *Session) bool { return h.cfg.EchoName != "" && t.name == h.cfg.EchoName }

// inCallLocked reports whether s and t are in a call with each other.
func inCallLocked(s, t *Session) bool { return s.peer == t || t.peer == s }

// endCallLocked ends the call between s and t, whichever of them is the echo user.
func endCallLocked(s, t *Session) {
	if s.peer == t {
		s.peer, s.unanswered = nil, false
		s.hub.presenceLocked(s.key, true)
	}
	if t.peer == s {
		t.peer, t.unanswered = nil, false
		s.hub.presenceLocked(t.key, true)
	}
	delete(s.callers, t)
	delete(t.callers, s)
	if h := s.hub; h.cl != nil {
		h.notePeerLocked(s)
		h.notePeerLocked(t)
	}
}

// allow applies the token-bucket rate limit.
func (s *Session) allow() bool {
	rate := s.hub.cfg.Rate
	if rate <= 0 || s.unlimited {
		return true
	}
	now := time.Now().UnixNano()
	if s.lastMsg != 0 {
		s.allowance += float64(now-s.lastMsg) / 1e9 * rate
		if max := float64(s.hub.cfg.Burst); s.allowance > max {
			s.allowance = max
		}
	}
	s.lastMsg = now
	if s.allowance < 1 {
		return false
	}
	s.allowance--
	return true
}

func (s *Session) login(m *protocol.Message) {
	s.missed.wanted.Store(m.Missed)
	if a := s.hub.cfg.Auth; a != nil && !s.hub.echoLogin(m) {
		s.checkLogin(a, m)
		return
	}
	if !m.HasName {
		s.loginFailed(protocol.CodeInvalidName, "a login needs a name")
		return
	}
	name, err := protocol.ValidateName(m.Name)
	if err != nil {
		s.loginFailed(protocol.CodeInvalidName, err.Error())
		return
	}
	s.loginAs(name, m.Token, "")
}

// loginAs logs s in as name, a valid name, with the resume token sent (if any); device is handed out in the reply.
// It reports whether s is logged in.
func (s *Session) loginAs(name string, token []byte, device string) bool {
	h := s.hub
	var (
		tell       []Conn // peers whose call ended
		tellName   string
		tellReason string
		replaced   Conn
		ended      []string // session ids of logins that ended
	)
	// endOwnLocked ends the login s had under another name (a rename, or a resume of another session).
	endOwnLocked := func() {
		if s.name == "" {
			return
		}
		ps, n, sid := s.unregisterLocked()
		if len(ps) > 0 {
			tell, tellName, tellReason = append(tell, ps...), n, protocol.ReasonRenamed
		}
		ended = append(ended, sid)
	}
	if h.cl != nil && !h.localOnly(name) && !s.holds(name) {
		s.loginDevice = device // for the reply, which comes when the shared state has answered
		s.loginCluster(name, token)
		return true
	}
	s.lockHub()
	if s.gone {
		s.unlockHub()
		return false
	}
	other := h.users[name]
	resume := other != nil && other != s && len(token) > 0 &&
		subtle.ConstantTimeCompare(token, []byte(other.token)) == 1
	if other != s && h.reservedLocked(name) {
		// Only the echo peer, which holds the echo token, may log in as the echo user (or resume it).
		echoPeer := name == h.cfg.EchoName && subtle.ConstantTimeCompare(token, []byte(h.cfg.EchoToken)) == 1
		if !echoPeer && !resume {
			s.unlockHub()
			h.m.loginsFailed.Inc()
			s.loginFailed(protocol.CodeNameTaken, "the name "+name+" is reserved for the echo test user: choose another")
			return false
		}
		resume = other != nil
		// The echo peer answers every test call on one connection: the per-connection rate limit, made for one
		// person, would refuse its answers when many call at once (each caller is limited on its own connection).
		s.unlimited = echoPeer
	}
	switch {
	case other == s: // the same name again: repeat the reply, same session
	case resume:
		// Resume: this connection takes the session over; the call, if any, goes on.
		endOwnLocked()
		s.takeOverLocked(other)
		ended = append(ended, other.sid)
		other.sid = ""
		replaced = other.conn
		s.sid = newToken()
	case other != nil:
		s.unlockHub()
		h.m.loginsFailed.Inc()
		msg := "the name " + name + " is taken: choose another"
		if len(token) > 0 {
			msg = "the name " + name + " is taken, and the resume token does not match"
		}
		s.loginFailed(protocol.CodeNameTaken, msg)
		return false
	default:
		endOwnLocked() // a rename: the old name is freed first
		s.name, s.key, s.token, s.sid = name, fold(name), newToken(), newToken()
		h.users[name] = s
		h.index.ReplaceOrInsert(s)
		h.m.online.Inc()
		h.presenceLocked(s.key, false)
	}
	reply := protocol.LoginOK{Name: s.name, Token: s.token, Device: device}
	if s.peer != nil {
		reply.Peer = s.peer.name
	}
	if e := h.cfg.EchoName; e != "" && h.users[e] != nil {
		reply.Echo = e
	}
	if h.cfg.ICEServers != nil {
		// Under the lock: the session cannot end (and SessionEnded be called) before its credentials are made.
		reply.ICEServers = h.cfg.ICEServers(reply.Name, s.host, s.sid)
	}
	s.unlockHub()

	h.endSessions(ended...)
	if replaced != nil {
		replaced.Close(protocol.CloseReplaced, replacedReason)
	}
	for _, p := range tell {
		h.send(p, func(b []byte) []byte { return protocol.AppendLeave(b, tellName, tellReason) })
	}
	s.conn.LoggedIn()
	h.m.logins.Inc()
	h.log.Debug("user logged in", "name", reply.Name, "resumed", replaced != nil, "host", s.host)
	s.reply(func(b []byte) []byte { return protocol.AppendLoginOK(b, reply) })
	return true
}

// reservedLocked reports whether name is the echo user's, or differs from it only in case, while an echo token
// reserves it.
func (h *Hub) reservedLocked(name string) bool {
	return h.cfg.EchoToken != "" && h.cfg.EchoName != "" && fold(name) == fold(h.cfg.EchoName)
}

// takeOverLocked makes s the session other was (a resume): s gets its name, token, call and records, and every
// reference to other now points at s. other is left with nothing and never logs in again.
func (s *Session) takeOverLocked(other *Session) {
	h := s.hub
	// Out of the index before other's key changes: the index is ordered by it.
	h.index.Delete(other)
	s.name, s.key, s.token = other.name, other.key, other.token
	s.peer, s.callers, s.unanswered = other.peer, other.callers, other.unanswered
	s.id, s.strangers, s.offers, s.offersAt = other.id, other.strangers, other.offers, other.offersAt
	s.record = other.record
	if p := s.peer; p != nil {
		if p.peer == other {
			p.peer = s
		}
		if _, ok := p.callers[other]; ok {
			delete(p.callers, other)
			p.callers[s] = struct{}{}
		}
	}
	for c := range s.callers {
		c.peer = s
	}
	other.name, other.key, other.token, other.peer, other.callers = "", "", "", nil, nil
	other.unanswered, other.strangers, other.gone = false, nil, true
	h.users[s.name] = s
	h.index.ReplaceOrInsert(s)
}

func (s *Session) loginFailed(code, message string) {
	s.hub.m.errors(code).Inc()
	s.reply(func(b []byte) []byte { return protocol.AppendLoginFailed(b, code, message) })
}

// targetLocked finds the user an offer, answer or candidate is for, or the error code that refuses it.
func (s *Session) targetLocked(m *protocol.Message) (*Session, string) {
	switch {
	case s.name == "":
		return nil, protocol.CodeNotLoggedIn
	case !m.HasName:
		return nil, protocol.CodeInvalidMessage
	}
	t := s.hub.users[string(m.Name)]
	if t == nil {
		if p := s.peer; p != nil && p.remote != nil && p.name == string(m.Name) { // a user of another node
			return p, ""
		}
		return nil, protocol.CodeNotOnline
	}
	return t, ""
}

func (s *Session) offer(m *protocol.Message) {
	h := s.hub
	if m.Offer == nil {
		s.fail(protocol.CodeInvalidMessage, "an offer needs an \"offer\" object", protocol.TypeOffer, "")
		return
	}
	var (
		to      Conn
		from    string
		ended   Conn
		newCall bool
		refused refusal
		cross   crossed // glare across nodes (cluster.go)
	)
	callee := string(m.Name)
	s.lockHub()
	t, code := s.targetLocked(m)
	if code == "" && s.remote != nil {
		cross = s.crossLocked(t)
	}
	switch {
	case code != "":
	case t == s:
		code = protocol.CodeSelfCall
	case s.peer == t, h.isEchoLocked(s) && t.peer == s: // renegotiation, or glare (the callee offering back)
		now := h.now()
		switch {
		case !h.isEchoLocked(s) && !s.allowOfferLocked(now):
			refused = refusal{protocol.CodeRateLimited, "too many offers in this call: at most " +
				strconv.Itoa(offerBurst) + " in a row, then one every " + offerInterval.String() +
				" (this one was not delivered)", -1}
		case s.unanswered:
			if !t.strangerLocked(s.id, now, true).spend(len(m.Offer)) {
				refused = notAnswered(callee)
			}
		case t.unanswered && t.peer == s: // the callee offers back: it accepts the call
			s.callAnsweredLocked(t)
			t.unanswered = false
			s.forgetStrangerLocked(t.id)
		}
	case h.isEchoLocked(s): // it takes calls, each caller its own, and makes none
		code = protocol.CodeNotInCall
	case t.peer != nil:
		code = protocol.CodeBusy
	case h.isEchoLocked(t) && len(t.callers) >= h.cfg.EchoMaxCalls:
		refused = refusal{protocol.CodeBusy, "the test line is full: " + strconv.Itoa(h.cfg.EchoMaxCalls) +
			" test calls are in progress, try again in a moment", -1}
	default:
		now := h.now()
		if r := t.strangerLocked(s.id, now, false); r != nil && r.until > now {
			refused = cooldown(callee, r.reason, time.Duration(r.until-now))
			break
		}
		if r := t.strangerLocked(s.id, now, true); !r.spend(len(m.Offer)) {
			refused = cooldown(callee, "", r.wait(len(m.Offer)))
			break
		}
		if old := s.peer; old != nil {
			s.callEndedLocked(old, s.name, protocol.ReasonHangup)
			endCallLocked(s, old)
			ended = old.conn
		}
		if h.isEchoLocked(t) {
			if t.callers == nil {
				t.callers = make(map[*Session]struct{})
			}
			s.peer, t.callers[s] = t, struct{}{}
		} else {
			s.peer, t.peer = t, s
		}
		s.unanswered = true
		newCall = true
		h.presenceLocked(s.key, true)
		h.presenceLocked(t.key, true)
		// Ringing t is s's word that t may reach it: a cooldown or spent budget s keeps for calls from t (s
		// declined t a moment ago, say) must not stop t from calling back.
		s.forgetStrangerLocked(t.id)
		if h.cl != nil {
			h.notePeerLocked(s)
			h.notePeerLocked(t)
		}
		s.callStartedLocked(t)
		if cross.lost { // t's own offer, crossing this one, accepts the call
			s.unanswered = false
			t.callAnsweredLocked(s)
		}
	}
	if code == "" && refused.code == "" {
		to, from = t.conn, s.name
		if newCall && s.remote != nil {
			// A caller of another node hears first that its call is taken (the verdict its node waits for),
			// queued before the lock is let go: nothing t sends the caller next may overtake it.
			s.remote.ringingLocked(callee)
			newCall = false
		}
	}
	s.callRefusedLocked(t, code, refused.code)
	missedTo, missedFrom := s.missedLocked(t, code)
	s.unlockHub()
	cross.tell(h)
	if missedTo != nil {
		h.send(missedTo, func(b []byte) []byte { return protocol.AppendMissed(b, missedFrom) })
	}

	switch {
	case code == protocol.CodeNotOnline && h.cl != nil && s.remote == nil:
		s.callRemote(m) // perhaps a user of another node
		return
	case code != "":
		s.callFailed(code, protocol.TypeOffer, callee)
		return
	case refused.code != "":
		s.refuse(refused, protocol.TypeOffer, callee)
		return
	}
	if ended != nil {
		h.send(ended, func(b []byte) []byte { return protocol.AppendLeave(b, from, protocol.ReasonHangup) })
	}
	if t.remote == nil { // one count in a cluster: the recipient's node's (cluster.go); counted before it can arrive
		h.m.relayed(protocol.TypeOffer).Inc()
	}
	h.send(to, func(b []byte) []byte { return protocol.AppendRelay(b, protocol.TypeOffer, m.Offer, from) })
	if newCall {
		s.reply(func(b []byte) []byte { return protocol.AppendRinging(b, callee) })
	}
}

// relay passes an answer or a candidate to the sender's peer.
func (s *Session) relay(typ string, m *protocol.Message, payload []byte) {
	h := s.hub
	if payload == nil {
		s.fail(protocol.CodeInvalidMessage, "a"+an(typ)+" "+typ+" message needs a \""+typ+"\" field", typ, "")
		return
	}
	var (
		to   Conn
		from string
	)
	s.lockHub()
	t, code := s.targetLocked(m)
	switch {
	case code != "":
	case !inCallLocked(s, t):
		code = protocol.CodeNotInCall
	case s.unanswered && s.peer == t: // a caller the callee has not accepted yet
		if !t.strangerLocked(s.id, h.now(), true).spend(len(payload)) {
			code = protocol.CodeNotAnswered
			break
		}
		to, from = t.conn, s.name
	default:
		if t.unanswered && t.peer == s && typ == protocol.TypeAnswer { // the callee answers
			s.callAnsweredLocked(t)
			t.unanswered = false
			s.forgetStrangerLocked(t.id)
		}
		to, from = t.conn, s.name
	}
	s.unlockHub()
	switch code {
	case "":
	case protocol.CodeNotOnline:
		if h.cl != nil && s.remote == nil {
			s.refuseRemote(typ, string(m.Name)) // perhaps a user of another node
			return
		}
		s.callFailed(code, typ, string(m.Name))
		return
	case protocol.CodeNotAnswered:
		s.refuse(notAnswered(string(m.Name)), typ, string(m.Name))
		return
	default:
		s.callFailed(code, typ, string(m.Name))
		return
	}
	if t.remote == nil { // one count in a cluster: the recipient's node's (cluster.go); counted before it can arrive
		h.m.relayed(typ).Inc()
	}
	h.send(to, func(b []byte) []byte { return protocol.AppendRelay(b, typ, payload, from) })
}

func (s *Session) leave(m *protocol.Message) {
	h := s.hub
	reason := protocol.ReasonHangup
	if m.Reason != nil {
		switch r := string(m.Reason); r {
		case protocol.ReasonHangup, protocol.ReasonDeclined, protocol.ReasonNoAnswer, protocol.ReasonCancelled:
			reason = r
		case protocol.ReasonDisconnected, protocol.ReasonRenamed, protocol.ReasonShutdown:
			if s.remote == nil {
				s.fail(protocol.CodeInvalidMessage, "unknown leave reason "+strconv.Quote(r)+": use hangup, declined, no_answer or cancelled", protocol.TypeLeave, "")
				return
			}
			reason = r // the server of a user of another node says why its call ended
		default:
			s.fail(protocol.CodeInvalidMessage, "unknown leave reason "+strconv.Quote(r)+": use hangup, declined, no_answer or cancelled", protocol.TypeLeave, "")
			return
		}
	}
	var (
		to   Conn
		from string
		code string
	)
	s.lockHub()
	t := s.peer
	if m.HasName {
		t = h.users[string(m.Name)]
		if p := s.peer; t == nil && p != nil && p.remote != nil && p.name == string(m.Name) {
			t = p // a user of another node
		}
	}
	switch {
	case s.name == "":
		code = protocol.CodeNotLoggedIn
	case t == nil && m.HasName:
		code = protocol.CodeNotOnline
	case t == nil || !inCallLocked(s, t):
		code = protocol.CodeNotInCall
	default:
		s.coolDownLocked(t, reason)
		s.callEndedLocked(t, s.name, reason)
		endCallLocked(s, t)
		to, from = t.conn, s.name
	}
	s.unlockHub()
	if code == protocol.CodeNotOnline && h.cl != nil && s.remote == nil {
		s.refuseRemote(protocol.TypeLeave, string(m.Name)) // perhaps a user of another node
		return
	}
	if code != "" {
		s.callFailed(code, protocol.TypeLeave, string(m.Name))
		return
	}
	if t.remote == nil { // one count in a cluster: the recipient's node's (cluster.go); counted before it can arrive
		h.m.relayed(protocol.TypeLeave).Inc()
	}
	h.send(to, func(b []byte) []byte { return protocol.AppendLeave(b, from, reason) })
}

// coolDownLocked starts the cooldown of Config.CallCooldown when s ends its call with t before it was accepted:
// the callee declined it, or either of them gave up on it ringing unanswered (no_answer).
func (s *Session) coolDownLocked(t *Session, reason string) {
	h := s.hub
	if h.cfg.CallCooldown <= 0 || (reason != protocol.ReasonDeclined && reason != protocol.ReasonNoAnswer) {
		return
	}
	var caller, callee *Session
	switch {
	case t.unanswered && t.peer == s: // from the callee
		caller, callee = t, s
	case s.unanswered && s.peer == t && reason == protocol.ReasonNoAnswer: // from the caller
		caller, callee = s, t
	default:
		return
	}
	now := h.now()
	r := callee.strangerLocked(caller.id, now, true)
	r.until, r.reason = now+int64(h.cfg.CallCooldown), reason
}

// refusal is a refused request whose message is not one of callFailed's.
type refusal struct {
	code, message string
	retryAfter    int // seconds; -1 when the error does not say
}

func notAnswered(callee string) refusal {
	return refusal{protocol.CodeNotAnswered, callee + " has not answered yet: nothing more reaches " + callee +
		" before the answer (at most " + strconv.Itoa(unansweredMessages) + " messages and " +
		strconv.Itoa(unansweredBytes>>10) + " KiB; this one was not delivered)", -1}
}

func cooldown(callee, reason string, left time.Duration) refusal {
	secs := seconds(left)
	var why string
	switch reason {
	case protocol.ReasonDeclined:
		why = callee + " declined your call"
	case protocol.ReasonNoAnswer:
		why = callee + " did not answer your call"
	default:
		why = callee + " has not answered your calls"
	}
	return refusal{protocol.CodeCooldown, why + ": you can call " + callee + " again in " + strconv.Itoa(secs) + " s", secs}
}

func (s *Session) refuse(r refusal, request, name string) {
	s.hub.m.errors(r.code).Inc()
	s.reply(func(b []byte) []byte {
		if r.retryAfter >= 0 {
			return protocol.AppendRetryError(b, r.code, r.message, request, name, r.retryAfter)
		}
		return protocol.AppendError(b, r.code, r.message, request, name)
	})
}

// callFailed answers a call message that could not be acted on.
func (s *Session) callFailed(code, request, name string) {
	var msg string
	switch code {
	case protocol.CodeNotLoggedIn:
		msg = "log in before sending " + request
	case protocol.CodeInvalidMessage:
		msg = "a" + an(request) + " " + request + " message needs the \"name\" of the user it is for"
	case protocol.CodeSelfCall:
		msg = "you cannot call yourself"
	case protocol.CodeNotOnline:
		msg = name + " is not online"
	case protocol.CodeBusy:
		msg = name + " is in another call"
	case protocol.CodeNotInCall:
		if name == "" {
			msg = "you are not in a call"
		} else {
			msg = "you are not in a call with " + name
		}
	}
	s.fail(code, msg, request, name)
}

const (
	defaultListLimit = 50
	maxListLimit     = 100
)

func (s *Session) users(m *protocol.Message) {
	h := s.hub
	if h.cfg.Auth != nil && !s.loggedIn() { // nothing but login before login
		s.callFailed(protocol.CodeNotLoggedIn, protocol.TypeUsers, "")
		return
	}
	limit := m.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	if limit > maxListLimit {
		limit = maxListLimit
	}
	query := strings.TrimSpace(string(m.Query))
	if s.watchUsers(m, query, limit) { // presence.go
		return
	}
	if h.cl != nil {
		s.usersCluster(m)
		return
	}
	s.lockHub()
	total := len(h.users)
	list, more := h.listLocked(fold(query), limit)
	s.unlockHub()
	s.reply(func(b []byte) []byte { return protocol.AppendUsers(b, query, list, more, total) })
}

func fold(name string) string { return strings.ToLower(name) }

func newToken() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// an returns "n" when word starts with a vowel, for "an offer", "an answer".
func an(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "n"
	}
	return ""
}
