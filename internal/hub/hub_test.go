package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"tandem/protocol"
)

// conn is a Conn that keeps what it is sent. It is the only stand-in in tandem's tests: the hub's own unit tests
// need no network; the server's tests drive the hub through real WebSockets.
type conn struct {
	mu       sync.Mutex
	msgs     []map[string]any
	closed   int
	loggedIn int // LoggedIn calls
}

func (c *conn) LoggedIn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loggedIn++
}

func (c *conn) Send(msg []byte) bool {
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		panic(fmt.Sprintf("hub sent invalid JSON %s: %v", msg, err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != 0 {
		return false
	}
	c.msgs = append(c.msgs, m)
	return true
}

func (c *conn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = code
}

// take returns and forgets what c was sent.
func (c *conn) take() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.msgs
	c.msgs = nil
	return m
}

type user struct {
	t *testing.T
	s *Session
	c *conn
}

func connect(t *testing.T, h *Hub) *user {
	c := &conn{}
	return &user{t: t, s: h.Connect(c, "example.test"), c: c}
}

func (u *user) send(msg string) { u.s.OnText([]byte(msg)) }

// expect checks that u was sent exactly the messages with these fields (a subset of each message's fields).
func (u *user) expect(want ...map[string]any) {
	u.t.Helper()
	got := u.c.take()
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

func (u *user) login(name string) string {
	u.t.Helper()
	u.send(`{"type":"login","name":"` + name + `"}`)
	got := u.c.take()
	if len(got) != 1 || got[0]["success"] != true {
		u.t.Fatalf("login %s: %v", name, got)
	}
	return got[0]["token"].(string)
}

type msg = map[string]any

func TestCallFlow(t *testing.T) {
	h := New(Config{ICEServers: func(name, host, _ string) []protocol.ICEServer {
		return []protocol.ICEServer{{URLs: []string{"turn:" + host}, Username: name}}
	}})
	a, b := connect(t, h), connect(t, h)
	a.send(`{"type":"login","name":" alice "}`)
	a.expect(msg{"type": "login", "success": true, "name": "alice"})
	b.login("bob")
	if h.Online() != 2 {
		t.Fatalf("Online = %d", h.Online())
	}

	a.send(`{"type":"offer","offer":{"sdp":"o"},"name":"bob"}`)
	b.expect(msg{"type": "offer", "name": "alice", "offer": map[string]any{"sdp": "o"}})
	a.expect(msg{"type": "ringing", "name": "bob"})
	b.send(`{"type":"answer","answer":{"sdp":"a"},"name":"alice"}`)
	a.expect(msg{"type": "answer", "name": "bob"})
	b.send(`{"type":"candidate","candidate":{"c":1},"name":"alice"}`)
	a.expect(msg{"type": "candidate", "name": "bob"})
	a.send(`{"type":"candidate","candidate":null,"name":"bob"}`)
	b.expect(msg{"type": "candidate", "candidate": nil})
	// A renegotiation (ICE restart) is relayed without ringing again.
	a.send(`{"type":"offer","offer":{"sdp":"o2"},"name":"bob"}`)
	b.expect(msg{"type": "offer"})
	a.expect()
	b.send(`{"type":"leave","name":"alice","reason":"hangup"}`)
	a.expect(msg{"type": "leave", "name": "bob", "reason": "hangup"})
	// After the leave they are no longer peers.
	b.send(`{"type":"candidate","candidate":{},"name":"alice"}`)
	b.expect(msg{"type": "error", "code": "not_in_call"})
}

func TestLoginCarriesICEServers(t *testing.T) {
	h := New(Config{ICEServers: func(name, host, _ string) []protocol.ICEServer {
		return []protocol.ICEServer{{URLs: []string{"turn:" + host + ":3478"}, Username: "123:" + name, Credential: "x"}}
	}})
	a := connect(t, h)
	a.send(`{"type":"login","name":"alice"}`)
	got := a.c.take()
	ice := got[0]["iceServers"].([]any)[0].(map[string]any)
	if ice["username"] != "123:alice" || fmt.Sprint(ice["urls"]) != "[turn:example.test:3478]" {
		t.Fatalf("iceServers = %v", got[0]["iceServers"])
	}
}

func TestRefusals(t *testing.T) {
	h := New(Config{})
	a, b, c, anon := connect(t, h), connect(t, h), connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	c.login("c")
	tests := []struct {
		from *user
		send string
		want msg
	}{
		{anon, `{"type":"offer","offer":{},"name":"a"}`, msg{"type": "error", "code": "not_logged_in", "request": "offer"}},
		{anon, `{"type":"answer","answer":{},"name":"a"}`, msg{"code": "not_logged_in"}},
		{anon, `{"type":"candidate","candidate":{},"name":"a"}`, msg{"code": "not_logged_in"}},
		{anon, `{"type":"leave","name":"a"}`, msg{"code": "not_logged_in"}},
		{a, `{"type":"offer","offer":{},"name":"ghost"}`, msg{"code": "not_online", "name": "ghost", "message": "ghost is not online"}},
		{a, `{"type":"leave","name":"ghost"}`, msg{"code": "not_online"}},
		{a, `{"type":"leave"}`, msg{"code": "not_in_call"}},
		{a, `{"type":"leave","name":"b"}`, msg{"code": "not_in_call"}},
		{a, `{"type":"answer","answer":{},"name":"b"}`, msg{"code": "not_in_call"}},
		{a, `{"type":"offer","offer":{},"name":"a"}`, msg{"code": "self_call"}},
		{a, `{"type":"offer","name":"b"}`, msg{"code": "invalid_message"}},
		{a, `{"type":"offer","offer":{}}`, msg{"code": "invalid_message"}},
		{a, `{"type":"candidate","name":"b"}`, msg{"code": "invalid_message"}},
		{a, `{"type":"leave","reason":"because"}`, msg{"code": "invalid_message"}},
		{a, `{"type":"dance"}`, msg{"code": "unknown_type", "message": "Command not found: dance"}},
		{a, `Hello world`, msg{"code": "invalid_json"}},
		{a, `[]`, msg{"code": "invalid_message"}},
		{a, `{"type":"login","name":42}`, msg{"code": "invalid_message", "request": "login"}},
	}
	for _, tt := range tests {
		tt.from.send(tt.send)
		tt.from.expect(tt.want)
	}
	for _, u := range []*user{a, b, c} {
		u.expect()
	}
}

func TestBusyAndGlare(t *testing.T) {
	h := New(Config{})
	a, b, c := connect(t, h), connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	c.login("c")
	// Glare: both call at once; each gets the other's offer, and they are one pair.
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	b.send(`{"type":"offer","offer":{},"name":"a"}`)
	a.expect(msg{"type": "ringing"}, msg{"type": "offer", "name": "b"})
	b.expect(msg{"type": "offer", "name": "a"})
	c.send(`{"type":"offer","offer":{},"name":"b"}`)
	c.expect(msg{"type": "error", "code": "busy", "name": "b"})
	b.expect()
	// Users in a call are listed as busy.
	c.send(`{"type":"users"}`)
	got := c.c.take()[0]
	if fmt.Sprint(got["users"]) != "[map[busy:true name:a] map[busy:true name:b] map[busy:false name:c]]" {
		t.Fatalf("users = %v", got["users"])
	}
	// Calling someone else while in a call ends the first call.
	a.send(`{"type":"offer","offer":{},"name":"c"}`)
	b.expect(msg{"type": "leave", "name": "a", "reason": "hangup"})
	c.expect(msg{"type": "offer", "name": "a"})
}

func TestCloseEndsCallAndFreesName(t *testing.T) {
	h := New(Config{})
	a, b := connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.take()
	b.take()
	// The callee goes away while ringing: the caller is told.
	b.s.OnClose()
	a.expect(msg{"type": "leave", "name": "b", "reason": "disconnected"})
	// Then the caller goes too (this crashed the tutorial's server).
	a.s.OnClose()
	if h.Online() != 0 {
		t.Fatalf("Online = %d", h.Online())
	}
	a2 := connect(t, h)
	a2.login("a")
}

func (u *user) take() { u.c.take() }

func TestRenameFreesOldName(t *testing.T) {
	h := New(Config{})
	a, b, c := connect(t, h), connect(t, h), connect(t, h)
	a.login("first")
	b.login("b")
	b.send(`{"type":"offer","offer":{},"name":"first"}`)
	a.take()
	b.take()
	tok := a.login("first") // the same name again: the same session
	a.send(`{"type":"login","name":"second"}`)
	got := a.c.take()
	if got[0]["name"] != "second" || got[0]["token"] == tok {
		t.Fatalf("rename reply %v", got)
	}
	b.expect(msg{"type": "leave", "name": "first", "reason": "renamed"})
	c.login("first")
	c.send(`{"type":"login","name":"second"}`)
	c.expect(msg{"type": "login", "success": false, "code": "name_taken"})
	if h.Online() != 3 {
		t.Fatalf("Online = %d", h.Online())
	}
	a.s.OnClose()
	c.s.OnClose()
	b.s.OnClose()
	if h.Online() != 0 || h.index.Len() != 0 {
		t.Fatalf("names outlived their connections: %d online, %d indexed", h.Online(), h.index.Len())
	}
}

func TestResume(t *testing.T) {
	h := New(Config{})
	a, b := connect(t, h), connect(t, h)
	tok := a.login("a")
	b.login("b")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.take()
	b.take()

	thief := connect(t, h)
	thief.send(`{"type":"login","name":"a","token":"guess"}`)
	thief.expect(msg{"success": false, "code": "name_taken"})

	a2 := connect(t, h)
	a2.send(`{"type":"login","name":"a","token":"` + tok + `"}`)
	a2.expect(msg{"success": true, "name": "a", "token": tok, "peer": "b"})
	if a.c.closed != protocol.CloseReplaced {
		t.Fatalf("old connection closed with %d", a.c.closed)
	}
	// The call goes on with the new connection; the old one's close changes nothing.
	a.s.OnClose()
	b.expect()
	b.send(`{"type":"candidate","candidate":{},"name":"a"}`)
	a2.expect(msg{"type": "candidate", "name": "b"})
	if h.Online() != 2 {
		t.Fatalf("Online = %d", h.Online())
	}
}

func TestNames(t *testing.T) {
	h := New(Config{})
	for _, name := range []string{`""`, `"   "`, `12`, `{}`, `null`, `"` + strings.Repeat("x", 10000) + `"`, `"a\u0000b"`, `"a\nb"`, `"x\u202ey"`} {
		u := connect(t, h)
		u.send(`{"type":"login","name":` + name + `}`)
		got := u.c.take()
		if len(got) != 1 {
			t.Fatalf("name %.20s: %v", name, got)
		}
		if got[0]["success"] == true {
			t.Errorf("name %.20s was accepted", name)
		}
	}
	if h.Online() != 0 {
		t.Fatalf("Online = %d", h.Online())
	}
}

func TestUsersList(t *testing.T) {
	h := New(Config{EchoName: "echo"})
	var us []*user
	for _, n := range []string{"Alan", "alice", "bob", "echo", "Ålesund", "al"} {
		u := connect(t, h)
		u.login(n)
		us = append(us, u)
	}
	q := us[0]
	q.send(`{"type":"users","query":"AL","limit":2}`)
	got := q.c.take()[0]
	if fmt.Sprint(got["users"]) != "[map[busy:false name:al] map[busy:false name:Alan]]" || got["more"] != true || got["total"] != 6.0 {
		t.Fatalf("users = %v", got)
	}
	q.send(`{"type":"users","query":"e"}`)
	got = q.c.take()[0]
	if fmt.Sprint(got["users"]) != "[map[busy:false echo:true name:echo]]" || got["more"] != false {
		t.Fatalf("users = %v", got)
	}
	q.send(`{"type":"users","limit":"ten"}`)
	q.expect(msg{"type": "error", "code": "invalid_message"})
}

func TestRateLimit(t *testing.T) {
	h := New(Config{Rate: 0.001, Burst: 3})
	a := connect(t, h)
	for i := 0; i < 3; i++ {
		a.send(`{"type":"users"}`)
	}
	a.send(`{"type":"users"}`)
	got := a.c.take()
	if len(got) != 4 || got[3]["code"] != "rate_limited" {
		t.Fatalf("got %v", got)
	}
}

func TestShutdownTellsCalls(t *testing.T) {
	h := New(Config{})
	a, b, c := connect(t, h), connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	c.login("c")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.take()
	b.take()
	h.Shutdown()
	a.expect(msg{"type": "leave", "name": "b", "reason": "shutdown"})
	b.expect(msg{"type": "leave", "name": "a", "reason": "shutdown"})
	c.expect()
	// The connections then close: nobody is told a second time.
	a.s.OnClose()
	b.expect()
}

// FuzzSession sends arbitrary messages from several users: the hub must never panic, must answer every
// message from a logged-out user, and must send only JSON (conn.Send checks).
func FuzzSession(f *testing.F) {
	f.Add(`{"type":"login","name":"x"}`, `{"type":"offer","offer":{},"name":"a"}`)
	f.Add(`{"type":"leave","name":"b"}`, `{"type":"login","name":"a","token":""}`)
	f.Add(`{"type":"users","query":"","limit":-5}`, `{"type":"answer","answer":{},"name":"a"}`)
	f.Fuzz(func(t *testing.T, m1, m2 string) {
		h := New(Config{})
		a, b, c := connect(t, h), connect(t, h), connect(t, h)
		a.login("a")
		b.login("b")
		b.send(`{"type":"offer","offer":{},"name":"a"}`)
		c.send(m1)
		b.send(m2)
		c.send(m2)
		a.send(m1)
		for _, u := range []*user{a, b, c} {
			u.s.OnClose()
		}
		if h.Online() != 0 || h.index.Len() != 0 {
			t.Fatalf("names left: %d", h.Online())
		}
	})
}

func TestLoginNamesEchoUser(t *testing.T) {
	h := New(Config{EchoName: "echo"})
	a := connect(t, h)
	a.login("alice")
	e := connect(t, h)
	e.login("echo")
	b := connect(t, h)
	b.send(`{"type":"login","name":"bob"}`)
	b.expect(msg{"type": "login", "success": true, "echo": "echo"})
	e.s.OnClose()
	c := connect(t, h)
	c.send(`{"type":"login","name":"carol"}`)
	if got := c.c.take(); got[0]["echo"] != nil {
		t.Fatalf("login reply names an echo user that is offline: %v", got[0])
	}
}
