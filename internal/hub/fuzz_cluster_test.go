package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/cluster"
)

// FuzzCluster drives random sequences of what clients do on three hubs of one in-process cluster (cluster.Memory,
// the store the routing suite runs on): logins and renames on any node, resumes with right and wrong tokens on
// another node than the name's, offers, answers, candidates and leaves between users of different nodes, users
// lists, connections closing, a node killed (and a new one started in its place), and the resume grace passing.
// After every step it waits until the cluster is quiet (every connection reads again, every node's inbox and
// queue of writes is empty) and checks, over all the live nodes: that nothing panicked; that a name is held by at
// most one session, the one the shared state says; that what the shared state holds is a live session's or a
// dead node's user's in its grace; that every relayed message reached only the user it was sent to, and the
// messages of one user to another in the order they were sent; that every user in a call has a peer that has it
// as its peer (on its own node or another), unless that peer's node died (its leave comes after the grace); and
// that the list's total is the number of users the clients were told they are (and the dead node's, in grace).
func FuzzCluster(f *testing.F) {
	for _, seed := range clusterFuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*maxClusterFuzzSteps {
			ops = ops[:3*maxClusterFuzzSteps]
		}
		r := newClusterRun(t)
		defer r.finish()
		for len(ops) > 0 {
			n := min(len(ops), 3)
			settle := r.step(ops[:n])
			ops = ops[n:]
			if settle || len(ops) == 0 {
				r.settle()
				r.check()
			}
		}
	})
}

// maxClusterFuzzSteps keeps a run short, and under the message burst (the hubs' clocks do not move).
const maxClusterFuzzSteps = 120

const (
	clusterFuzzNodes = 3
	clusterFuzzSlots = 6
	// clusterFuzzGrace is the resume grace of the run's cluster: real time (the cluster's timers are real).
	clusterFuzzGrace = 50 * time.Millisecond
)

// clusterFuzzNames: eight, so that the flag bits of an argument (0x40, 0x80) leave its name as it is.
var clusterFuzzNames = []string{"alice", "Alice", "bob", "carol", "dave", "Bob", "erin", "frank"}

// clusterConn is a Conn of the cluster run: it keeps what it is sent (from any goroutine), and can pause.
type clusterConn struct {
	mu       sync.Mutex
	msgs     []map[string]any
	sent     int
	closed   int  // the close code the hub gave it
	gone     bool // the client closed it
	paused   bool
	loggedIn int
	bad      string // what was wrong with a message sent, if anything
}

func (c *clusterConn) LoggedIn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loggedIn++
}

func (c *clusterConn) Send(msg []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent++
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil && c.bad == "" {
		c.bad = fmt.Sprintf("the hub sent %.200s: %v", msg, err)
	}
	if c.closed != 0 {
		return false
	}
	c.msgs = append(c.msgs, m)
	return true
}

func (c *clusterConn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed == 0 {
		c.closed = code
	}
}

func (c *clusterConn) PauseReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
}

func (c *clusterConn) ResumeReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = false
}

// take returns what the connection was sent since the last call, and the close code.
func (c *clusterConn) take() ([]map[string]any, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msgs := c.msgs
	c.msgs = nil
	return msgs, c.closed
}

// clusterNode is a hub of the run, with its backend and the Local the backend delivers to (the hub itself, seen
// through a counter, and the barrier the run sends itself through the node's inbox).
type clusterNode struct {
	id        string
	h         *Hub
	b         *cluster.MemoryNode
	dead      bool
	killedAt  time.Time
	delivered atomic.Int64
	barrier   chan struct{}
}

// observedLocal is the hub as its backend's Local: everything goes to the hub, but a Probe (which a hub ignores)
// is the run's barrier, and deliveries are counted.
type observedLocal struct {
	*Hub
	n *clusterNode
}

func (o observedLocal) Deliver(e *cluster.Envelope) {
	if e.Kind == cluster.Probe {
		o.n.barrier <- struct{}{}
		return
	}
	o.n.delivered.Add(1)
	o.Hub.Deliver(e)
}

// clusterSlot is one client: its connection, its node, and what it was told.
type clusterSlot struct {
	c    *clusterConn
	s    *Session
	node *clusterNode
	name string // the name the client was told it has, "" for none
	// had are the names it had since its messages were last read: a message for one of them may still be on its
	// way when it renames.
	had    map[string]bool
	logins int
	leaves []string // who the leaves it was sent were from, and why ("name reason")
	asking string   // the name of a login whose reply has not been read yet
}

type clusterRun struct {
	t      *testing.T
	m      *cluster.Memory
	nodes  [clusterFuzzNodes]*clusterNode
	all    []*clusterNode // every node started, dead ones too, to shut down at the end
	slots  [clusterFuzzSlots]*clusterSlot
	conns  []*clusterConn        // every connection made
	tokens map[string]string     // the last resume token seen for each name
	ghosts map[string]bool       // names of users of killed nodes, which wait their grace
	seq    int                   // the last sequence number put in a relayed message
	last   map[[2]string]int     // the last sequence number received from a user by a user
	dead   []*clusterNode        // killed nodes whose grace has not been waited for
	gen    [clusterFuzzNodes]int // how many nodes were started in each place (for their ids)
	closed []*clusterSlot        // clients whose connection closed
}

func newClusterRun(t *testing.T) *clusterRun {
	r := &clusterRun{t: t, m: cluster.NewMemory(clusterFuzzGrace), tokens: map[string]string{}, ghosts: map[string]bool{},
		last: map[[2]string]int{}}
	for i := range r.nodes {
		r.nodes[i] = r.startNode(i)
	}
	return r
}

func (r *clusterRun) startNode(i int) *clusterNode {
	n := &clusterNode{id: fmt.Sprintf("node%d.%d", i, r.gen[i]), barrier: make(chan struct{}, 1)}
	r.gen[i]++
	n.b = r.m.Node(n.id)
	n.h = New(Config{Cluster: n.b, ResumeGrace: clusterFuzzGrace, CallCooldown: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	fakeClock(n.h)
	if err := n.b.Start(observedLocal{n.h, n}); err != nil {
		r.t.Fatal(err)
	}
	r.all = append(r.all, n)
	return n
}

func (r *clusterRun) connect(n *clusterNode) *clusterSlot {
	c := &clusterConn{}
	r.conns = append(r.conns, c)
	return &clusterSlot{c: c, s: n.h.Connect(c, "127.0.0.1"), node: n, had: map[string]bool{}}
}

// step does one thing, chosen by op[0]; op[1] chooses the client (and the node of a new connection), op[2] the
// rest. It reports whether the cluster should settle before the next step: not when op[0]'s two high bits are
// set, so that what the next step does crosses what this one set going (two offers crossing between nodes, a
// message and a close, a node killed with messages on their way). A client's next message still waits until
// its connection reads again, as a real connection's does.
func (r *clusterRun) step(op []byte) (settle bool) {
	arg := func(i int) int {
		if i < len(op) {
			return int(op[i])
		}
		return 0
	}
	i := arg(1) % clusterFuzzSlots
	if r.slots[i] == nil {
		r.slots[i] = r.connect(r.nodes[arg(1)/clusterFuzzSlots%clusterFuzzNodes])
	}
	u := r.slots[i]
	r.readable(u)
	target := clusterFuzzNames[arg(2)%len(clusterFuzzNames)]
	switch (arg(0) & 0x3f) % 11 {
	case 0, 1: // log in, or rename
		r.login(u, target, "")
	case 2: // resume with the right token (when one was seen) or a wrong one
		token := r.tokens[target]
		if arg(2)&0x80 != 0 || token == "" {
			token = "wrong" + token
		}
		r.login(u, target, token)
	case 3:
		r.relay(u, "offer", target)
	case 4:
		r.relay(u, "answer", target)
	case 5, 6:
		r.relay(u, "candidate", target)
	case 7: // leave, to a name (bit 0x40) or to the peer, with a reason (bits 0x38) or none
		reasons := []string{"", "hangup", "declined", "no_answer", "cancelled"}
		msg := `{"type":"leave"`
		if arg(2)&0x40 != 0 {
			msg += `,"name":"` + target + `"`
		}
		if reason := reasons[(arg(2)>>3&7)%len(reasons)]; reason != "" {
			msg += `,"reason":"` + reason + `"`
		}
		u.s.OnText([]byte(msg + "}"))
	case 8: // the connection closes
		r.close(i)
	case 9: // a node is killed, and a new one started in its place
		r.kill(arg(2) % clusterFuzzNodes)
	case 10: // a users list
		u.s.OnText([]byte(`{"type":"users","query":"` + target[:arg(2)%len(target)] + `","limit":50}`))
	}
	return arg(0)&0xc0 != 0xc0
}

// readable waits until u's connection reads again (its last request is answered).
func (r *clusterRun) readable(u *clusterSlot) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		u.c.mu.Lock()
		paused := u.c.paused && u.c.closed == 0 // (a connection the hub closed is not read any more)
		u.c.mu.Unlock()
		if !paused {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("a request still waits on the cluster after 3 s (a message was lost)")
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (r *clusterRun) login(u *clusterSlot, name, token string) {
	msg, _ := json.Marshal(map[string]string{"type": "login", "name": name, "token": token})
	u.asking = name
	u.s.OnText(msg)
}

// relay sends a message of type typ to name, with a sequence number and its addressee in its payload.
func (r *clusterRun) relay(u *clusterSlot, typ, name string) {
	r.seq++
	u.s.OnText(fmt.Appendf(nil, `{"type":%q,%q:{"seq":%d,"to":%q},"name":%q}`, typ, typ, r.seq, name, name))
}

func (r *clusterRun) close(i int) {
	u := r.slots[i]
	u.c.mu.Lock()
	u.c.gone = true
	u.c.mu.Unlock()
	u.s.OnClose()
	r.slots[i] = nil
	if !u.node.dead {
		r.closed = append(r.closed, u)
	}
}

// kill kills node i as kill -9 would: its connections are gone with it, its users' names wait the grace.
func (r *clusterRun) kill(i int) {
	n := r.nodes[i]
	n.dead, n.killedAt = true, time.Now()
	n.b.Kill()
	for j, u := range r.slots {
		if u != nil && u.node == n {
			if u.name != "" {
				r.ghosts[u.name] = true
			}
			if u.asking != "" { // a login under way: the store may have given it the name
				r.ghosts[u.asking] = true
			}
			r.slots[j] = nil
		}
	}
	r.dead = append(r.dead, n)
	r.nodes[i] = r.startNode(i)
}

// busy reports whether something is still under way: a connection waits on the cluster, a failed claim is being
// undone, a resume grace runs.
func (r *clusterRun) busy() bool {
	for _, c := range r.conns {
		c.mu.Lock()
		// (A connection that is closed waits for nobody: a call its session placed just before a resume on
		// another node took it over gets no verdict, and ends at its timeout, unseen.)
		paused := c.paused && c.closed == 0 && !c.gone
		c.mu.Unlock()
		if paused {
			return true
		}
	}
	for _, n := range r.all {
		if len(n.h.cl.undoing) > 0 {
			return true
		}
	}
	return false
}

// activity is a count of what has happened: deliveries between nodes, messages to clients.
func (r *clusterRun) activity() int64 {
	var a int64
	for _, n := range r.all {
		a += n.delivered.Load()
	}
	for _, c := range r.conns {
		c.mu.Lock()
		a += int64(c.sent)
		c.mu.Unlock()
	}
	return a
}

// barriers waits until what each live node's queue of writes and inbox held has been done.
func (r *clusterRun) barriers() {
	for _, n := range r.all {
		done := make(chan struct{})
		if n.h.cl.write(func(context.Context) { close(done) }) {
			r.await(done, "the queue of writes of "+n.id)
		}
	}
	for _, n := range r.nodes {
		if n.b.Send(n.id, &cluster.Envelope{Kind: cluster.Probe}) {
			select {
			case <-n.barrier:
			case <-time.After(10 * time.Second):
				r.t.Fatalf("the inbox of %s did not get through in 10 s", n.id)
			}
		}
	}
}

func (r *clusterRun) await(ch chan struct{}, what string) {
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("%s did not get through in 10 s", what)
	}
}

// settle waits until the cluster is quiet: nothing under way, and two rounds of barriers in a row saw nothing
// happen. (What it cannot see, a message forwarded to a user's new node by a goroutine of its own, takes far less
// than those rounds.) Then it reads what the clients were sent.
func (r *clusterRun) settle() {
	// Nothing in a healthy in-process cluster waits for its timeout (5 s): a wait that long is a message lost.
	deadline := time.Now().Add(3 * time.Second)
	quiet, last := 0, int64(-1)
	for quiet < 2 {
		for r.busy() {
			if time.Now().After(deadline) {
				r.t.Fatal("a request still waits on the cluster after 3 s (a message was lost)")
			}
			time.Sleep(50 * time.Microsecond)
		}
		r.barriers()
		if a := r.activity(); a == last && !r.busy() {
			quiet++
		} else {
			quiet, last = 0, a
		}
	}
	r.read()
}

// read goes through what the clients were sent.
func (r *clusterRun) read() {
	for i, u := range r.slots {
		if u == nil {
			continue
		}
		msgs, closed := u.c.take()
		for _, m := range msgs {
			r.received(u, m)
		}
		clear(u.had)
		u.had[u.name] = true
		if closed != 0 { // (replaced by a resume, or a name conflict): its transport closes it
			r.close(i)
		}
	}
	for _, c := range r.conns {
		c.mu.Lock()
		bad := c.bad
		c.mu.Unlock()
		if bad != "" {
			r.t.Fatal(bad)
		}
	}
}

func (r *clusterRun) received(u *clusterSlot, m map[string]any) {
	t := r.t
	switch m["type"] {
	case "login":
		u.asking = ""
		if m["success"] != true {
			return
		}
		got := m["name"].(string)
		u.name, r.tokens[got] = got, m["token"].(string)
		u.had[got] = true
		u.logins++
		delete(r.ghosts, got)
		// (A client whose name a resume took has its connection closed, 4000, and is dropped by read: which of
		// two replies was the later cannot be told from the order the clients are read in.)
	case "offer", "answer", "candidate":
		from, _ := m["name"].(string)
		payload, _ := m[m["type"].(string)].(map[string]any)
		to, _ := payload["to"].(string)
		seq := int(payload["seq"].(float64))
		if !u.had[to] {
			t.Fatalf("%s (before: %v) was sent %v, which %s sent to %s", u.name, u.had, m, from, to)
		}
		k := [2]string{from, to}
		if seq <= r.last[k] {
			t.Fatalf("%s was sent %s's message %d after its message %d", to, from, seq, r.last[k])
		}
		r.last[k] = seq
	case "leave":
		u.leaves = append(u.leaves, fmt.Sprint(m["name"], " ", m["reason"]))
	case "error":
		if c := m["code"]; c == "internal" || c == "invalid_message" || c == "invalid_json" {
			t.Fatalf("%s was sent %v", u.name, m)
		}
	}
}

// check verifies the invariants once the cluster is quiet. What a goroutine of a node does on its own (a
// message forwarded to the node its recipient moved to) is not seen by settle: a check that fails is tried again
// after settling again, for up to a second, and fails only if the state stays wrong.
func (r *clusterRun) check() {
	deadline := time.Now().Add(time.Second)
	for {
		err := r.checkOnce()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		r.settle()
	}
}

// checkOnce returns what is wrong with the cluster's state, if anything.
func (r *clusterRun) checkOnce() error {
	held := map[string]*Session{} // name -> the live session holding it, over all live nodes
	nodeOf := map[*Session]*clusterNode{}
	for _, n := range r.nodes {
		n.h.mu.Lock()
		err := indexError(n.h)
		for name, s := range n.h.users {
			if held[name] != nil {
				err = fmt.Errorf("%s is held on %s and %s", name, nodeOf[held[name]].id, n.id)
			}
			if s.name != name || s.gone || s.sid == "" || s.remote != nil {
				err = fmt.Errorf("%s's session on %s: named %q, gone %v, session id %q", name, n.id, s.name, s.gone, s.sid)
			}
			held[name], nodeOf[s] = s, n
		}
		n.h.mu.Unlock()
		if err != nil {
			return err
		}
	}
	// Calls: every user's peer has it as its peer, on its node or another.
	for _, n := range r.nodes {
		if err := r.callError(n, held, nodeOf); err != nil {
			return err
		}
	}
	// The shared state holds exactly the live sessions' names, and the dead nodes' users' in their grace.
	ctx := context.Background()
	list, more, total, err := r.nodes[0].b.List(ctx, "", 100)
	if err != nil || more || total != len(list) {
		return fmt.Errorf("the shared state's list: %v, more %v, total %d, %v", list, more, total, err)
	}
	for _, e := range list {
		route, ok, err := r.nodes[0].b.Locate(ctx, e.Name)
		switch s := held[e.Name]; {
		case err != nil:
			return err
		case s == nil && !(r.ghosts[e.Name] && !ok):
			return fmt.Errorf("the shared state holds %s (at %v), which no live session holds", e.Name, route)
		case s != nil && (!ok || route.Node != nodeOf[s].id || route.Session != s.sid):
			return fmt.Errorf("%s is held on %s by %s; the shared state says %v (%v)", e.Name, nodeOf[s].id, s.sid, route, ok)
		}
	}
	for name := range held {
		if !slices.ContainsFunc(list, func(e cluster.Entry) bool { return e.Name == name }) {
			return fmt.Errorf("%s is held on a node but not in the shared state's list", name)
		}
	}
	// What the clients were told agrees with the nodes.
	var told []string
	for _, u := range r.slots {
		if u == nil || u.name == "" {
			continue
		}
		told = append(told, u.name)
		if s := held[u.name]; s == nil || s.conn != u.c {
			return fmt.Errorf("a client was told it is %s; its node does not say so", u.name)
		}
		u.c.mu.Lock()
		in, logins := u.c.loggedIn, u.logins
		u.c.mu.Unlock()
		if in != logins {
			return fmt.Errorf("LoggedIn called %d times for %d successful logins", in, logins)
		}
	}
	if len(told) != len(held) {
		return fmt.Errorf("the clients were told they are %v; the nodes hold %d names", told, len(held))
	}
	// The list a client gets: its total counts the users the clients were told they are (and the dead node's
	// users in their grace).
	probe := r.connect(r.nodes[0])
	probe.s.OnText([]byte(`{"type":"users","limit":100}`))
	r.settle()
	msgs, _ := probe.c.take()
	probe.s.OnClose()
	if len(msgs) != 1 || msgs[0]["type"] != "users" {
		return fmt.Errorf("a users request got %v", msgs)
	}
	var listed []string
	for _, x := range msgs[0]["users"].([]any) {
		listed = append(listed, x.(map[string]any)["name"].(string))
	}
	sort.Strings(listed)
	sort.Strings(told)
	n := int(msgs[0]["total"].(float64))
	for _, name := range told {
		if !slices.Contains(listed, name) {
			return fmt.Errorf("the list %v (total %d) lacks %s", listed, n, name)
		}
	}
	if n != len(listed) || n < len(told) || n > len(told)+len(r.ghosts) {
		return fmt.Errorf("the list %v has a total of %d; the clients were told they are %v; in their grace: %v", listed, n, told, r.ghosts)
	}
	// Closed clients keep nothing.
	for _, u := range r.closed {
		u.node.h.mu.Lock()
		s := u.s
		bad := s.name != "" || s.peer != nil || s.sid != "" || !s.gone
		u.node.h.mu.Unlock() // (before Fatal: the shutdown takes the lock)
		if bad {
			return fmt.Errorf("a closed session keeps state: name %q, peer %v, sid %q, gone %v", s.name, s.peer != nil, s.sid, s.gone)
		}
	}
	r.closed = r.closed[:0]
	return nil
}

// callError returns what is wrong with the calls of n's users, if anything: a peer that does not have the user
// as its peer, on its node or another (unless the peer's node died: its leave comes after the grace).
func (r *clusterRun) callError(n *clusterNode, held map[string]*Session, nodeOf map[*Session]*clusterNode) error {
	n.h.mu.Lock()
	defer n.h.mu.Unlock()
	for name, s := range n.h.users {
		p := s.peer
		if p == nil {
			continue
		}
		if p.remote == nil {
			if n.h.users[p.name] != p || p.peer != s {
				return fmt.Errorf("%s's peer %s on %s does not have it as its peer", name, p.name, n.id)
			}
			continue
		}
		q := held[p.name]
		if q == nil {
			if r.deadNode(p.remote.node()) {
				continue
			}
			return fmt.Errorf("%s (on %s) is in a call with %s, who is not online (its node was %s)", name, n.id, p.name, p.remote.node())
		}
		qn := nodeOf[q]
		if qn.id != p.remote.node() {
			return fmt.Errorf("%s (on %s) has its peer %s on %s, which is on %s", name, n.id, p.name, p.remote.node(), qn.id)
		}
		if qn == n {
			return fmt.Errorf("%s (on %s) has a stand-in for %s of its own node", name, n.id, p.name)
		}
		qn.h.mu.Lock()
		qp := q.peer
		ok := qp != nil && qp.name == name && qp.remote != nil && qp.remote.node() == n.id
		qn.h.mu.Unlock()
		if !ok {
			return fmt.Errorf("%s (on %s) is in a call with %s (on %s), whose peer is another", name, n.id, p.name, qn.id)
		}
	}
	return nil
}

// deadNode reports whether id is a node that was killed.
func (r *clusterRun) deadNode(id string) bool {
	for _, n := range r.all {
		if n.id == id {
			return n.dead
		}
	}
	return false
}

// finish waits out the grace of the killed nodes (their users' peers are told, their names freed), checks once
// more, then shuts every node down.
func (r *clusterRun) finish() {
	if !r.t.Failed() && len(r.dead) > 0 {
		last := r.dead[len(r.dead)-1].killedAt
		time.Sleep(time.Until(last.Add(clusterFuzzGrace + 5*time.Millisecond)))
		for _, n := range r.all {
			for {
				n.h.cl.timersMu.Lock()
				left := len(n.h.cl.timers)
				n.h.cl.timersMu.Unlock()
				if left == 0 {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		r.settle()
		clear(r.ghosts)
		r.check()
	}
	for _, n := range r.all {
		n.h.Shutdown()
	}
}

// clusterFuzzSeeds are scenarios to start from, in FuzzCluster's encoding: three bytes a step (what, which client
// and the node of its connection, argument).
func clusterFuzzSeeds() [][]byte {
	const (
		login, resume, offer, answer, candidate, leave, closeConn, kill, users = 0, 2, 3, 4, 5, 7, 8, 9, 10
		alice, bob, carol, dave                                                = 0, 2, 3, 4
		on1, on2                                                               = clusterFuzzSlots, 2 * clusterFuzzSlots
		withName                                                               = 0x40
		cross                                                                  = 0xc0 // no settling after it
	)
	return [][]byte{
		// A call between two nodes: offer, answer, candidates both ways, a hang-up.
		{login, 0, alice, login, 1 + on1, bob, offer, 0, bob, answer, 1 + on1, alice, candidate, 0, bob,
			candidate, 1 + on1, alice, candidate, 0, bob, leave, 1 + on1, withName | alice, users, 2 + on2, 0},
		// A call; the callee resumes on a third node and the call goes on; the old connection is replaced.
		{login, 0, alice, login, 1 + on1, bob, offer, 0, bob, answer, 1 + on1, alice, resume, 2 + on2, bob,
			candidate, 0, bob, candidate, 2 + on2, alice, closeConn, 0, 0},
		// A node with a user in a call is killed; the user resumes elsewhere within the grace; another is killed
		// and does not come back.
		{login, 0, alice, login, 1 + on1, bob, login, 2 + on2, carol, offer, 0, bob, answer, 1 + on1, alice,
			kill, 0, 1, resume, 3 + on2, bob, candidate, 0, bob, offer, 2 + on2, dave, kill, 0, 2, users, 0, 0},
		// Offers crossing between two nodes (glare: the second is sent before the first arrived), then a candidate
		// crossing a close.
		{login, 0, alice, login, 1 + on1, bob, cross | offer, 0, bob, offer, 1 + on1, alice, cross | candidate, 0, bob,
			closeConn, 1 + on1, 0, users, 2 + on2, 0},
		// Glare across nodes, a rename in a call, calling another ends the call.
		{login, 0, alice, login, 1 + on1, bob, login, 2 + on2, carol, offer, 0, bob, offer, 1 + on1, alice,
			candidate, 0, bob, login, 1 + on1, dave, offer, 2 + on2, alice, offer, 0, carol, users, 3, 0},
	}
}

// aliceCallsBob logs alice and bob in on their slots' nodes and has alice call bob, who answers.
func (r *clusterRun) aliceCallsBob(alice, bob *clusterSlot) {
	r.login(alice, "alice", "")
	r.login(bob, "bob", "")
	r.settle()
	r.relay(alice, "offer", "bob")
	r.settle()
	r.relay(bob, "answer", "alice")
	r.settle()
}

// holdWrites makes node i's writes to the shared state wait until the returned function is called.
func (r *clusterRun) holdWrites(i int) (release func()) {
	r.t.Helper()
	block := make(chan struct{})
	if !r.nodes[i].h.cl.write(func(context.Context) { <-block }) {
		r.t.Fatal("the queue of writes is full")
	}
	return func() { close(block) }
}

// inNoCall fails the test if one of users is still in a call.
func (r *clusterRun) inNoCall(users ...*clusterSlot) {
	r.t.Helper()
	for _, u := range users {
		u.node.h.mu.Lock()
		p := u.s.peer
		u.node.h.mu.Unlock()
		if p != nil {
			r.t.Fatalf("%s is still in a call with %s", u.name, p.name)
		}
	}
}

// TestClusterResumeAfterClose (found by FuzzCluster): a user in a call with a user of another node loses its
// connection, and resumes on a third node before its own node has freed its name. Its node ended the call when
// the connection closed (the peer is told), so the resumed session, which found the call in the shared state,
// must be told it is over too, not left in a call its peer no longer has.
func TestClusterResumeAfterClose(t *testing.T) {
	r := newClusterRun(t)
	defer r.finish()
	alice, bob := r.connect(r.nodes[0]), r.connect(r.nodes[1])
	r.slots[0], r.slots[1] = alice, bob
	r.aliceCallsBob(alice, bob)
	r.check()

	// alice's node frees her name only after what is queued before it: the resume comes first.
	release := r.holdWrites(0)
	r.close(0)
	alice2 := r.connect(r.nodes[2])
	r.slots[2] = alice2
	r.login(alice2, "alice", r.tokens["alice"])
	r.readable(alice2)
	release()
	r.settle()
	r.check()
	if alice2.name != "alice" {
		t.Fatal("alice did not resume")
	}
	if fmt.Sprint(alice2.leaves, bob.leaves) != "[bob disconnected] [alice disconnected]" {
		t.Fatalf("alice's new connection was told %q, bob %q; want a leave each", alice2.leaves, bob.leaves)
	}
	r.inNoCall(alice2, bob)
}

// TestClusterResumeAfterPeerLeft (found by FuzzCluster): a user in a call resumes on another node just as its
// peer's connection closes. The shared state still had the call when the resume took it over; the old node had
// ended it. The resumed session must be told the call is over, not left in a call with a user who is gone.
func TestClusterResumeAfterPeerLeft(t *testing.T) {
	r := newClusterRun(t)
	defer r.finish()
	alice, bob := r.connect(r.nodes[0]), r.connect(r.nodes[0])
	r.slots[0], r.slots[1] = alice, bob
	r.aliceCallsBob(alice, bob)
	r.check()

	// The node's writes (bob's name freed, alice's call gone from the shared state) wait: the resume comes first.
	release := r.holdWrites(0)
	r.close(1)
	alice2 := r.connect(r.nodes[2])
	r.slots[2] = alice2
	r.login(alice2, "alice", r.tokens["alice"])
	r.readable(alice2)
	release()
	r.settle()
	r.check()
	if alice2.name != "alice" || r.slots[0] != nil {
		t.Fatal("alice did not resume")
	}
	if fmt.Sprint(alice2.leaves) != "[bob disconnected]" {
		t.Fatalf("alice's new connection was told %q; want bob's leave", alice2.leaves)
	}
	r.inNoCall(alice2)
}

// TestClusterResumeWhileCalling (found by FuzzCluster): a user's old connection places a call with a user of
// another node while the user resumes on that other node, which read the shared state before the call was in it.
// The resumed session has no call (its login reply names no peer): the call of the old session ends, and the
// callee is told, instead of staying in a call with a session that is gone.
func TestClusterResumeWhileCalling(t *testing.T) {
	r := newClusterRun(t)
	defer r.finish()
	alice, bob := r.connect(r.nodes[2]), r.connect(r.nodes[0])
	r.slots[0], r.slots[1] = alice, bob
	r.login(alice, "alice", "")
	r.login(bob, "bob", "")
	r.settle()
	r.check()

	// bob's node writes nothing to the shared state meanwhile: the resume does not see the call.
	release := r.holdWrites(0)
	r.relay(bob, "offer", "alice")
	r.readable(bob) // the call rings
	bob2 := r.connect(r.nodes[2])
	r.slots[2] = bob2
	r.login(bob2, "bob", r.tokens["bob"])
	r.readable(bob2)
	release()
	r.settle()
	r.check()
	if bob2.name != "bob" || r.slots[1] != nil {
		t.Fatal("bob did not resume")
	}
	if fmt.Sprint(alice.leaves, bob2.leaves) != "[bob disconnected] []" {
		t.Fatalf("alice was told %q, bob's new connection %q; want bob's leave for alice", alice.leaves, bob2.leaves)
	}
	r.inNoCall(alice, bob2)
}

// TestClusterResumeOfClosedConnection (found by FuzzCluster): a connection resumes a name, and is closed (or
// replaced) after the shared state gave it the name and before its node acted on the answer. The name is freed;
// the session it was taken from must not stay online, holding a name the shared state no longer has (someone
// else could take it): it is closed (4000), its peer told, whether it is on the same node or another.
func TestClusterResumeOfClosedConnection(t *testing.T) {
	for _, same := range []bool{false, true} {
		t.Run(fmt.Sprint("same node ", same), func(t *testing.T) {
			r := newClusterRun(t)
			defer r.finish()
			alice, bob := r.connect(r.nodes[0]), r.connect(r.nodes[0])
			r.slots[0], r.slots[1] = alice, bob
			r.aliceCallsBob(alice, bob)

			// The resuming connection closes; then its claim's answer, which Redis gave before, is acted on.
			n := r.nodes[1]
			if same {
				n = r.nodes[0]
			}
			x := r.connect(n)
			x.s.OnClose()
			claim := cluster.Claim{Name: "alice", Session: newToken(), Token: r.tokens["alice"], NewToken: newToken(), Caller: x.s.id}
			res, err := n.b.Claim(context.Background(), claim)
			if err != nil || res.Outcome != cluster.Resumed {
				t.Fatalf("claim: %v %v", res, err)
			}
			x.s.claimed("alice", claim, res)
			r.settle()
			r.check()
			if r.slots[0] != nil {
				t.Fatal("alice's connection is still open")
			}
			if fmt.Sprint(bob.leaves) != "[alice disconnected]" {
				t.Fatalf("bob was told %q", bob.leaves)
			}
			if _, ok, _ := n.b.Locate(context.Background(), "alice"); ok {
				t.Fatal("alice is still held")
			}
		})
	}
}
