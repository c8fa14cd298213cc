// Package hubtest is the routing test suite that every backend of the hub must pass: one node in memory, several
// nodes on the in-process cluster, several nodes on Redis. The same tests, with the same expectations, run on
// each (Run), so that what users see on one node and across nodes cannot drift apart. Users are spread over the
// nodes, so that on a cluster most of the pairs in a test are on different nodes.
package hubtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/internal/hub"
)

// Factory returns n hubs that act as one server (a single node may be returned n times), started; it arranges
// for them to be shut down when the test ends. cfg is the configuration each hub gets (a factory adds its
// cluster backend).
type Factory func(t *testing.T, n int, cfg hub.Config) []*hub.Hub

// Nodes is how many nodes the suite spreads its users over.
const Nodes = 3

// EchoToken is the token the echo peer of each node logs in with.
const EchoToken = "echo-secret"

// Config is the hub configuration the suite uses.
func Config() hub.Config {
	return hub.Config{EchoName: "echo", EchoToken: EchoToken, CallCooldown: 30 * time.Second}
}

// Run runs every test of the suite with hubs from f.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"CallFlow", testCallFlow},
		{"UniqueNames", testUniqueNames},
		{"ConcurrentLogins", testConcurrentLogins},
		{"Refusals", testRefusals},
		{"BusyAndGlare", testBusyAndGlare},
		{"SimultaneousGlare", testSimultaneousGlare},
		{"DeclinedAndNoAnswer", testDeclinedAndNoAnswer},
		{"CallBackAfterDecline", testCallBackAfterDecline},
		{"CallingAnotherEndsCall", testCallingAnotherEndsCall},
		{"CloseEndsCallAndFreesName", testCloseEndsCallAndFreesName},
		{"Rename", testRename},
		{"Resume", testResume},
		{"UsersList", testUsersList},
		{"Ordering", testOrdering},
		{"Echo", testEcho},
		{"UnansweredBudget", testUnansweredBudget},
		{"MissedCalls", testMissedCalls},
		{"Presence", testPresence},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, &env{t: t, hubs: f(t, Nodes, Config())})
		})
	}
}

type env struct {
	t    *testing.T
	hubs []*hub.Hub
}

// on returns the hub of node i (modulo the nodes).
func (e *env) on(i int) *hub.Hub { return e.hubs[i%len(e.hubs)] }

// client connects a new client to node i.
func (e *env) client(i int) *Client { return Connect(e.t, e.on(i)) }

// Conn is a hub.Conn that keeps what it is sent, and can pause (as a cluster node needs).
type Conn struct {
	mu      sync.Mutex
	msgs    []map[string]any
	closed  int
	paused  bool
	changed chan struct{} // signalled on every change
}

// LoggedIn implements hub.Conn.
func (c *Conn) LoggedIn() {}

// Send implements hub.Conn.
func (c *Conn) Send(msg []byte) bool {
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		panic(fmt.Sprintf("the hub sent invalid JSON %s: %v", msg, err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != 0 {
		return false
	}
	c.msgs = append(c.msgs, m)
	c.signal()
	return true
}

// Close implements hub.Conn.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed == 0 {
		c.closed = code
	}
	c.signal()
}

// PauseReading implements the hub's pauser.
func (c *Conn) PauseReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
}

// ResumeReading implements the hub's pauser.
func (c *Conn) ResumeReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = false
	c.signal()
}

func (c *Conn) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// until waits (10 s at most) for cond, checked with c.mu held.
func (c *Conn) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("waited 10 s for %s; the client has %v", what, c.msgs)
		}
	}
}

// Client is one client of a hub.
type Client struct {
	t *testing.T
	S *hub.Session
	C *Conn
}

// Connect connects a client to h.
func Connect(t *testing.T, h *hub.Hub) *Client {
	c := &Conn{changed: make(chan struct{}, 1)}
	return &Client{t: t, S: h.Connect(c, "example.test"), C: c}
}

// Send sends msg, as the client's connection would: the next message waits until the hub reads again.
func (u *Client) Send(msg string) {
	u.t.Helper()
	u.S.OnText([]byte(msg))
	u.C.until(u.t, "the hub to read again", func() bool { return !u.C.paused })
}

// Next waits for the next message and returns it.
func (u *Client) Next() map[string]any {
	u.t.Helper()
	u.C.until(u.t, "a message", func() bool { return len(u.C.msgs) > 0 })
	u.C.mu.Lock()
	defer u.C.mu.Unlock()
	m := u.C.msgs[0]
	u.C.msgs = u.C.msgs[1:]
	return m
}

// Expect waits for len(want) messages and checks that they have these fields (a subset of each message's) and
// that no other message came before them.
func (u *Client) Expect(want ...map[string]any) {
	u.t.Helper()
	if len(want) > 0 {
		u.C.until(u.t, fmt.Sprintf("%d messages", len(want)), func() bool { return len(u.C.msgs) >= len(want) })
	}
	u.C.mu.Lock()
	got := u.C.msgs
	u.C.msgs = nil
	u.C.mu.Unlock()
	if len(got) != len(want) {
		u.t.Fatalf("got %d messages %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		for k, v := range want[i] {
			if fmt.Sprint(got[i][k]) != fmt.Sprint(v) {
				u.t.Fatalf("message %d: %s = %v, want %v (message %v)", i, k, got[i][k], v, got[i])
			}
		}
	}
}

// Closed waits until the hub closed the client's connection and returns the code.
func (u *Client) Closed() int {
	u.t.Helper()
	u.C.until(u.t, "the connection to be closed", func() bool { return u.C.closed != 0 })
	u.C.mu.Lock()
	defer u.C.mu.Unlock()
	return u.C.closed
}

// Login logs in as name and returns the resume token.
func (u *Client) Login(name string) string {
	u.t.Helper()
	return u.LoginToken(name, "")
}

// LoginToken logs in as name with a resume token and returns the token of the reply.
func (u *Client) LoginToken(name, token string) string {
	u.t.Helper()
	msg, _ := json.Marshal(map[string]string{"type": "login", "name": name, "token": token})
	u.Send(string(msg))
	m := u.Next()
	if m["type"] != "login" || m["success"] != true {
		u.t.Fatalf("login %s: %v", name, m)
	}
	return m["token"].(string)
}

// Close closes the client's connection (the transport's OnClose).
func (u *Client) Close() { u.S.OnClose() }

type msg = map[string]any

func offer(to string) string { return `{"type":"offer","offer":{"sdp":"o"},"name":"` + to + `"}` }
func answer(to string) string {
	return `{"type":"answer","answer":{"sdp":"a"},"name":"` + to + `"}`
}
func candidate(to string, n int) string {
	return `{"type":"candidate","candidate":{"n":` + fmt.Sprint(n) + `},"name":"` + to + `"}`
}

// call logs in caller on node i and callee on node j, and sets up an answered call between them.
func (e *env) call(i, j int, caller, callee string) (*Client, *Client) {
	a, b := e.client(i), e.client(j)
	a.Login(caller)
	b.Login(callee)
	a.Send(offer(callee))
	a.Expect(msg{"type": "ringing", "name": callee})
	b.Expect(msg{"type": "offer", "name": caller})
	b.Send(answer(caller))
	a.Expect(msg{"type": "answer", "name": callee})
	return a, b
}

func testCallFlow(t *testing.T, e *env) {
	a, b := e.client(0), e.client(1)
	a.Send(`{"type":"login","name":" alice "}`)
	a.Expect(msg{"type": "login", "success": true, "name": "alice"})
	b.Login("bob")
	a.Send(`{"type":"offer","offer":{"sdp":"o"},"name":"bob"}`)
	a.Expect(msg{"type": "ringing", "name": "bob"})
	b.Expect(msg{"type": "offer", "name": "alice", "offer": map[string]any{"sdp": "o"}})
	b.Send(`{"type":"answer","answer":{"sdp":"a"},"name":"alice"}`)
	a.Expect(msg{"type": "answer", "name": "bob", "answer": map[string]any{"sdp": "a"}})
	b.Send(candidate("alice", 1))
	a.Expect(msg{"type": "candidate", "name": "bob", "candidate": map[string]any{"n": 1}})
	a.Send(`{"type":"candidate","candidate":null,"name":"bob"}`)
	b.Expect(msg{"type": "candidate", "candidate": nil, "name": "alice"})
	// A renegotiation (ICE restart) is relayed without ringing again, both ways.
	a.Send(`{"type":"offer","offer":{"sdp":"o2"},"name":"bob"}`)
	b.Expect(msg{"type": "offer", "offer": map[string]any{"sdp": "o2"}})
	b.Send(`{"type":"offer","offer":{"sdp":"o3"},"name":"alice"}`)
	a.Expect(msg{"type": "offer", "offer": map[string]any{"sdp": "o3"}})
	b.Expect()
	a.Expect()
	b.Send(`{"type":"leave","name":"alice","reason":"hangup"}`)
	a.Expect(msg{"type": "leave", "name": "bob", "reason": "hangup"})
	// After the leave they are no longer peers, on either side.
	b.Send(candidate("alice", 2))
	b.Expect(msg{"type": "error", "code": "not_in_call", "name": "alice"})
	a.Send(candidate("bob", 3))
	a.Expect(msg{"type": "error", "code": "not_in_call", "name": "bob"})
	// A leave without a name ends the call with the peer, wherever it is.
	a.Send(offer("bob"))
	a.Expect(msg{"type": "ringing"})
	b.Expect(msg{"type": "offer"})
	a.Send(`{"type":"leave","reason":"cancelled"}`)
	b.Expect(msg{"type": "leave", "name": "alice", "reason": "cancelled"})
	a.Expect()
}

func testUniqueNames(t *testing.T, e *env) {
	a, b, c := e.client(0), e.client(1), e.client(2)
	a.Login("alice")
	b.Send(`{"type":"login","name":"alice"}`)
	b.Expect(msg{"type": "login", "success": false, "code": "name_taken", "message": "the name alice is taken: choose another"})
	b.Send(`{"type":"login","name":"alice","token":"guess"}`)
	b.Expect(msg{"type": "login", "success": false, "code": "name_taken", "message": "the name alice is taken, and the resume token does not match"})
	// Names differ in case as they do on one node: "Alice" is another user.
	c.Login("Alice")
	b.Login("bob")
	// The same name again from the same connection is the same login.
	tok := a.Login("alice")
	if again := a.Login("alice"); again != tok {
		t.Fatalf("logging in again under the same name changed the token")
	}
	// The echo name is reserved on every node.
	d := e.client(1)
	d.Send(`{"type":"login","name":"Echo"}`)
	d.Expect(msg{"type": "login", "success": false, "code": "name_taken"})
}

func testConcurrentLogins(t *testing.T, e *env) {
	const n = 30
	var clients []*Client
	for i := range n {
		clients = append(clients, e.client(i))
	}
	var wg sync.WaitGroup
	for _, u := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.S.OnText([]byte(`{"type":"login","name":"zed"}`))
		}()
	}
	wg.Wait()
	won := 0
	for _, u := range clients {
		m := u.Next()
		switch {
		case m["success"] == true:
			won++
		case m["code"] != "name_taken":
			t.Fatalf("login reply %v", m)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent logins as one name succeeded", won, n)
	}
}

func testRefusals(t *testing.T, e *env) {
	a, b, anon := e.client(0), e.client(1), e.client(2)
	a.Login("a")
	b.Login("b")
	tests := []struct {
		from *Client
		send string
		want msg
	}{
		{anon, offer("a"), msg{"type": "error", "code": "not_logged_in", "request": "offer"}},
		{anon, answer("a"), msg{"code": "not_logged_in"}},
		{a, offer("ghost"), msg{"code": "not_online", "name": "ghost", "message": "ghost is not online", "request": "offer"}},
		{a, `{"type":"leave","name":"ghost"}`, msg{"code": "not_online"}},
		{a, `{"type":"leave"}`, msg{"code": "not_in_call"}},
		{a, `{"type":"leave","name":"b"}`, msg{"code": "not_in_call", "name": "b"}},
		{a, answer("b"), msg{"code": "not_in_call", "name": "b"}},
		{a, candidate("b", 1), msg{"code": "not_in_call", "name": "b"}},
		{a, offer("a"), msg{"code": "self_call"}},
		{a, `{"type":"offer","name":"b"}`, msg{"code": "invalid_message"}},
		{a, `{"type":"leave","reason":"disconnected"}`, msg{"code": "invalid_message"}},
	}
	for _, tt := range tests {
		tt.from.Send(tt.send)
		tt.from.Expect(tt.want)
	}
	b.Expect()
}

func testBusyAndGlare(t *testing.T, e *env) {
	a, b, c := e.client(0), e.client(1), e.client(2)
	a.Login("a")
	b.Login("b")
	c.Login("c")
	// Glare: b offers back while a's call rings; each gets the other's offer, and they are one pair.
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing", "name": "b"})
	b.Expect(msg{"type": "offer", "name": "a"})
	b.Send(offer("a"))
	a.Expect(msg{"type": "offer", "name": "b"})
	b.Expect()
	c.Send(offer("b"))
	c.Expect(msg{"type": "error", "code": "busy", "name": "b", "message": "b is in another call"})
	c.Send(offer("a"))
	c.Expect(msg{"type": "error", "code": "busy", "name": "a"})
	// They are in a call: messages pass both ways, and nothing of c's reached them.
	a.Send(candidate("b", 1))
	b.Expect(msg{"type": "candidate", "name": "a"})
	b.Send(candidate("a", 2))
	a.Expect(msg{"type": "candidate", "name": "b"})
	// Users in a call are listed as busy, from every node (a cluster writes the flags in the background: soon).
	for i := range len(e.hubs) {
		u := e.client(i)
		listEventually(t, u, `{"type":"users","query":"","limit":3}`, func(m msg) bool {
			return fmt.Sprint(m["users"]) == "[map[busy:true name:a] map[busy:true name:b] map[busy:false name:c]]"
		})
	}
}

// testSimultaneousGlare: two users call each other at the same moment, so that on a cluster both offers are on
// their way between the nodes at once. As on one node, they become one pair, each gets the other's offer, and
// exactly one of them (the one whose offer counts as the call) gets ringing; the other's offer accepted the call,
// so nothing either sends afterwards is held to the budget of a call not yet answered.
func testSimultaneousGlare(t *testing.T, e *env) {
	const rounds = 16
	for r := range rounds {
		a, b := e.client(r), e.client(r+1)
		an, bn := fmt.Sprintf("g%d-a", r), fmt.Sprintf("g%d-b", r)
		if r%2 == 1 { // the name that sorts first on either node
			an, bn = bn, an
		}
		a.Login(an)
		b.Login(bn)
		sendTogether(a, b, offer(bn), offer(an))
		ringing := map[*Client]bool{}
		for _, u := range []struct {
			c    *Client
			peer string
		}{{a, bn}, {b, an}} {
			// Both read again: every verdict is in, and so every ringing; an offer may still be on its way.
			u.c.C.until(t, "the offer of "+u.peer, func() bool {
				for _, m := range u.c.C.msgs {
					if m["type"] == "offer" {
						return true
					}
				}
				return false
			})
			u.c.C.mu.Lock()
			got := u.c.C.msgs
			u.c.C.msgs = nil
			u.c.C.mu.Unlock()
			offers := 0
			for _, m := range got {
				switch {
				case m["type"] == "offer" && m["name"] == u.peer:
					offers++
				case m["type"] == "ringing" && m["name"] == u.peer:
					ringing[u.c] = true
				default:
					t.Fatalf("round %d: unexpected %v (all: %v)", r, m, got)
				}
			}
			if offers != 1 {
				t.Fatalf("round %d: %d offers from %s in %v", r, offers, u.peer, got)
			}
		}
		if len(ringing) != 1 {
			t.Fatalf("round %d: %d of the two callers got ringing, want exactly one", r, len(ringing))
		}
		// One pair, its call accepted: more than an unanswered call's budget passes either way, in order.
		caller, callee, calleeName := a, b, bn
		if ringing[b] {
			caller, callee, calleeName = b, a, an
		}
		const n = 80
		for i := range n {
			caller.Send(candidate(calleeName, i))
		}
		for i := range n {
			if m := callee.Next(); m["type"] != "candidate" || m["candidate"].(map[string]any)["n"] != float64(i) {
				t.Fatalf("round %d: candidate %d arrived as %v", r, i, m)
			}
		}
		caller.Expect()
		callee.Send(`{"type":"leave","reason":"hangup"}`)
		caller.Expect(msg{"type": "leave", "reason": "hangup"})
	}
}

// sendTogether has a send x and b send y at the same moment, and waits until the hub reads both again.
func sendTogether(a, b *Client, x, y string) {
	a.t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range []struct {
		u   *Client
		msg string
	}{{a, x}, {b, y}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s.u.S.OnText([]byte(s.msg))
		}()
	}
	close(start)
	wg.Wait()
	a.C.until(a.t, "the hub to read again", func() bool { return !a.C.paused })
	b.C.until(b.t, "the hub to read again", func() bool { return !b.C.paused })
}

// listEventually sends a users request until the reply satisfies ok (10 s at most).
func listEventually(t *testing.T, u *Client, req string, ok func(msg) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u.Send(req)
		m := u.Next()
		if ok(m) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("users: %v", m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testDeclinedAndNoAnswer(t *testing.T, e *env) {
	a, b := e.client(0), e.client(1)
	a.Login("a")
	b.Login("b")
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing"})
	b.Expect(msg{"type": "offer"})
	b.Send(`{"type":"leave","name":"a","reason":"declined"}`)
	a.Expect(msg{"type": "leave", "name": "b", "reason": "declined"})
	a.Send(offer("b"))
	m := a.Next()
	if m["code"] != "cooldown" || m["retryAfter"] == nil || !strings.HasPrefix(m["message"].(string), "b declined your call") {
		t.Fatalf("calling again after a decline: %v", m)
	}
	b.Expect()
	// No answer, from the caller: the callee is told, and the caller waits too.
	c, d := e.client(2), e.client(0)
	c.Login("c")
	d.Login("d")
	c.Send(offer("d"))
	c.Expect(msg{"type": "ringing"})
	d.Expect(msg{"type": "offer"})
	c.Send(`{"type":"leave","name":"d","reason":"no_answer"}`)
	d.Expect(msg{"type": "leave", "name": "c", "reason": "no_answer"})
	c.Send(offer("d"))
	c.Expect(msg{"type": "error", "code": "cooldown"})
}

// testCallBackAfterDecline: ringing someone is one's word that they may call back. b declines a's call, then
// calls a, who does not answer; a may then call b back at once, though b's decline would have held a off.
func testCallBackAfterDecline(t *testing.T, e *env) {
	a, b := e.client(0), e.client(1)
	a.Login("a")
	b.Login("b")
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing"})
	b.Expect(msg{"type": "offer"})
	b.Send(`{"type":"leave","name":"a","reason":"declined"}`)
	a.Expect(msg{"type": "leave", "name": "b", "reason": "declined"})
	b.Send(offer("a"))
	b.Expect(msg{"type": "ringing", "name": "a"})
	a.Expect(msg{"type": "offer", "name": "b"})
	b.Send(`{"type":"leave","name":"a","reason":"no_answer"}`)
	a.Expect(msg{"type": "leave", "name": "b", "reason": "no_answer"})
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing", "name": "b"})
	b.Expect(msg{"type": "offer", "name": "a"})
}

func testCallingAnotherEndsCall(t *testing.T, e *env) {
	a, b := e.call(0, 1, "a", "b")
	c := e.client(2)
	c.Login("c")
	a.Send(offer("c"))
	a.Expect(msg{"type": "ringing", "name": "c"})
	b.Expect(msg{"type": "leave", "name": "a", "reason": "hangup"})
	c.Expect(msg{"type": "offer", "name": "a"})
	b.Send(candidate("a", 1))
	b.Expect(msg{"type": "error", "code": "not_in_call"})
}

// loginEventually logs u in as name, which is being freed (the cluster frees names in the background).
func loginEventually(t *testing.T, u *Client, name string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg, _ := json.Marshal(map[string]string{"type": "login", "name": name})
		u.Send(string(msg))
		m := u.Next()
		if m["success"] == true {
			return m["token"].(string)
		}
		if m["code"] != "name_taken" || time.Now().After(deadline) {
			t.Fatalf("login %s: %v", name, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testCloseEndsCallAndFreesName(t *testing.T, e *env) {
	a, b := e.client(0), e.client(1)
	a.Login("a")
	b.Login("b")
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing"})
	b.Expect(msg{"type": "offer"})
	// The callee goes away while ringing: the caller is told.
	b.Close()
	a.Expect(msg{"type": "leave", "name": "b", "reason": "disconnected"})
	a.Send(candidate("b", 1))
	a.Expect(msg{"type": "error", "code": "not_online"})
	// The name is free again, on any node.
	loginEventually(t, e.client(2), "b")
	a.Close()
	loginEventually(t, e.client(1), "a")
}

func testRename(t *testing.T, e *env) {
	a, b := e.call(0, 1, "first", "b")
	a.Send(`{"type":"login","name":"second"}`)
	m := a.Next()
	if m["name"] != "second" || m["success"] != true {
		t.Fatalf("rename reply %v", m)
	}
	b.Expect(msg{"type": "leave", "name": "first", "reason": "renamed"})
	loginEventually(t, e.client(2), "first")
	c := e.client(1)
	c.Send(`{"type":"login","name":"second"}`)
	c.Expect(msg{"type": "login", "success": false, "code": "name_taken"})
	// A rename to a taken name keeps the name one had.
	b.Send(`{"type":"login","name":"second"}`)
	b.Expect(msg{"type": "login", "success": false, "code": "name_taken"})
	b.Send(offer("second"))
	b.Expect(msg{"type": "ringing", "name": "second"})
	a.Expect(msg{"type": "offer", "name": "b"})
}

func testResume(t *testing.T, e *env) {
	for _, where := range []struct {
		name string
		node int
	}{{"SameNode", 0}, {"OtherNode", 2}} {
		t.Run(where.name, func(t *testing.T) {
			e := &env{t: t, hubs: e.hubs} // (its clients fail this subtest, not the parent)
			a, b := e.call(0, 1, "a-"+where.name, "b-"+where.name)
			an, bn := "a-"+where.name, "b-"+where.name
			tok := a.Login(an)
			// A cluster node writes who is in a call to the shared state in the background, a moment after the
			// call starts; a resume on another node reads the call from there (docs/cluster.md, "When things fail").
			// The client below reconnects once the call is written, as a real client's reconnect comes long after.
			listEventually(t, e.client(where.node), `{"type":"users","query":"`+an+`"}`, func(m msg) bool {
				return fmt.Sprint(m["users"]) == "[map[busy:true name:"+an+"]]"
			})
			thief := e.client(where.node)
			thief.Send(`{"type":"login","name":"` + an + `","token":"guess"}`)
			thief.Expect(msg{"success": false, "code": "name_taken"})

			a2 := e.client(where.node)
			a2.Send(`{"type":"login","name":"` + an + `","token":"` + tok + `"}`)
			a2.Expect(msg{"success": true, "name": an, "token": tok, "peer": bn})
			if code := a.Closed(); code != 4000 {
				t.Fatalf("the old connection was closed with %d", code)
			}
			// The old connection's close changes nothing; the call goes on with the new one, both ways.
			a.Close()
			b.Send(candidate(an, 1))
			a2.Expect(msg{"type": "candidate", "name": bn})
			a2.Send(candidate(bn, 2))
			b.Expect(msg{"type": "candidate", "name": an, "candidate": map[string]any{"n": 2}})
			// And it ends as a call does.
			b.Send(`{"type":"leave","name":"` + an + `"}`)
			a2.Expect(msg{"type": "leave", "name": bn, "reason": "hangup"})
		})
	}
}

func testUsersList(t *testing.T, e *env) {
	for i := range len(e.hubs) { // each node's echo peer
		echo := e.client(i)
		echo.LoginToken("echo", EchoToken)
	}
	var us []*Client
	for i, n := range []string{"Alan", "alice", "bob", "Ålesund", "al"} {
		u := e.client(i)
		u.Login(n)
		us = append(us, u)
	}
	for i := range len(e.hubs) {
		q := e.client(i)
		q.Send(`{"type":"users","query":"AL","limit":2}`)
		m := q.Next()
		if fmt.Sprint(m["users"]) != "[map[busy:false name:al] map[busy:false name:Alan]]" || m["more"] != true || m["total"] != 6.0 {
			t.Fatalf("node %d: users = %v", i, m)
		}
		q.Send(`{"type":"users","query":" al ","limit":10}`)
		m = q.Next()
		if fmt.Sprint(m["users"]) != "[map[busy:false name:al] map[busy:false name:Alan] map[busy:false name:alice]]" || m["more"] != false || m["query"] != "al" {
			t.Fatalf("node %d: users = %v", i, m)
		}
		q.Send(`{"type":"users","query":"e"}`)
		m = q.Next()
		if fmt.Sprint(m["users"]) != "[map[busy:false echo:true name:echo]]" || m["more"] != false {
			t.Fatalf("node %d: users = %v", i, m)
		}
		q.Send(`{"type":"users","limit":3}`)
		m = q.Next()
		if fmt.Sprint(m["users"]) != "[map[busy:false name:al] map[busy:false name:Alan] map[busy:false name:alice]]" || m["more"] != true {
			t.Fatalf("node %d: users = %v", i, m)
		}
		q.Send(`{"type":"users","query":"ål"}`)
		m = q.Next()
		if fmt.Sprint(m["users"]) != "[map[busy:false name:Ålesund]]" {
			t.Fatalf("node %d: users = %v", i, m)
		}
		q.Send(`{"type":"users","limit":"ten"}`)
		q.Expect(msg{"type": "error", "code": "invalid_message"})
	}
	// Gone users leave the list (the cluster frees names in the background).
	us[1].Close()
	listEventually(t, e.client(2), `{"type":"users","query":"ali"}`, func(m msg) bool {
		return fmt.Sprint(m["users"]) == "[]" && m["total"] == 5.0
	})
}

func testOrdering(t *testing.T, e *env) {
	a, b := e.call(0, 1, "a", "b")
	const n = 500
	for i := range n {
		a.Send(candidate("b", i))
	}
	for i := range n {
		m := b.Next()
		if c, ok := m["candidate"].(map[string]any); !ok || c["n"] != float64(i) {
			t.Fatalf("message %d: %v", i, m)
		}
	}
	// A renegotiation offer is not overtaken by the candidates sent after it.
	a.Send(offer("b"))
	a.Send(candidate("b", n))
	b.Expect(msg{"type": "offer"}, msg{"type": "candidate", "candidate": map[string]any{"n": n}})
}

func testEcho(t *testing.T, e *env) {
	for i := range len(e.hubs) {
		echo := e.client(i)
		echo.LoginToken("echo", EchoToken)
		u := e.client(i + 1) // a user logged in to each node calls the echo user, which is that node's own
		u.S = e.on(i).Connect(u.C, "example.test")
		u.Send(`{"type":"login","name":"caller` + fmt.Sprint(i) + `"}`)
		if m := u.Next(); m["echo"] != "echo" {
			t.Fatalf("login reply %v does not name the echo user", m)
		}
		u.Send(offer("echo"))
		u.Expect(msg{"type": "ringing", "name": "echo"})
		echo.Expect(msg{"type": "offer", "name": "caller" + fmt.Sprint(i)})
		echo.Send(answer("caller" + fmt.Sprint(i)))
		u.Expect(msg{"type": "answer", "name": "echo"})
	}
}

func testUnansweredBudget(t *testing.T, e *env) {
	a, b := e.client(0), e.client(1)
	a.Login("a")
	b.Login("b")
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing"})
	b.Expect(msg{"type": "offer"})
	// Before b answers, a may send 64 messages in all (the offer was one); the rest are refused.
	for i := range 70 {
		a.Send(candidate("b", i))
	}
	refused := 0
	for range 7 {
		if m := a.Next(); m["code"] == "not_answered" {
			refused++
		}
	}
	a.Expect()
	if refused != 7 {
		t.Fatalf("%d refusals, want 7", refused)
	}
	for i := range 63 {
		if m := b.Next(); m["candidate"].(map[string]any)["n"] != float64(i) {
			t.Fatalf("candidate %d: %v", i, m)
		}
	}
	// Once b answers, the budget no longer applies.
	b.Send(answer("a"))
	a.Expect(msg{"type": "answer"})
	a.Send(candidate("b", 100))
	b.Expect(msg{"type": "candidate", "candidate": map[string]any{"n": 100}})
}
