package hub

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// echoConn records what the hub sends to one connection.
type echoConn struct {
	mu   sync.Mutex
	msgs []map[string]any
}

func (c *echoConn) LoggedIn() {}

func (c *echoConn) Send(msg []byte) bool {
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	return true
}

func (c *echoConn) Close(int, string) {}

// next returns the oldest message not yet taken, or nil.
func (c *echoConn) next() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.msgs) == 0 {
		return nil
	}
	m := c.msgs[0]
	c.msgs = c.msgs[1:]
	return m
}

type echoUser struct {
	t *testing.T
	c *echoConn
	s *Session
}

func echoLogin(t *testing.T, h *Hub, name, token string) *echoUser {
	u := &echoUser{t: t, c: &echoConn{}}
	u.s = h.Connect(u.c, "127.0.0.1")
	u.do(`{"type":"login","name":"` + name + `","token":"` + token + `"}`)
	if m := u.c.next(); m["success"] != true {
		t.Fatalf("login %s: %v", name, m)
	}
	return u
}

func (u *echoUser) do(msg string) { u.s.OnText([]byte(msg)) }

// expect checks the next message has the given fields.
func (u *echoUser) expect(fields map[string]any) {
	u.t.Helper()
	m := u.c.next()
	for k, v := range fields {
		if m[k] != v {
			u.t.Fatalf("got %v, want %v", m, fields)
		}
	}
}

// TestEchoUserTakesManyCalls: the echo user is in a call with several users at once, and each call ends alone.
func TestEchoUserTakesManyCalls(t *testing.T) {
	h := New(Config{EchoName: "echo"})
	echo := echoLogin(t, h, "echo", "")
	alice := echoLogin(t, h, "alice", "")
	bob := echoLogin(t, h, "bob", "")
	carol := echoLogin(t, h, "carol", "")

	for _, u := range []*echoUser{alice, bob} {
		u.do(`{"type":"offer","name":"echo","offer":{"type":"offer","sdp":""}}`)
		u.expect(map[string]any{"type": "ringing", "name": "echo"})
		echo.expect(map[string]any{"type": "offer"})
	}
	for _, to := range []string{"alice", "bob"} {
		echo.do(`{"type":"answer","name":"` + to + `","answer":{"type":"answer","sdp":""}}`)
		echo.do(`{"type":"candidate","name":"` + to + `","candidate":null}`)
	}
	for _, u := range []*echoUser{alice, bob} {
		u.expect(map[string]any{"type": "answer", "name": "echo"})
		u.expect(map[string]any{"type": "candidate", "name": "echo"})
		u.do(`{"type":"candidate","name":"echo","candidate":null}`)
		echo.expect(map[string]any{"type": "candidate"})
	}
	// The echo user is never busy; a caller of it is.
	carol.do(`{"type":"users"}`)
	m := carol.c.next()
	for _, x := range m["users"].([]any) {
		u := x.(map[string]any)
		if busy := u["name"] != "carol" && u["name"] != "echo"; u["busy"] != busy {
			t.Fatalf("users: %v", m)
		}
	}
	carol.do(`{"type":"offer","name":"alice","offer":{}}`)
	carol.expect(map[string]any{"type": "error", "code": "busy"})

	// Alice hangs up: only her call ends.
	alice.do(`{"type":"leave","name":"echo"}`)
	echo.expect(map[string]any{"type": "leave", "name": "alice"})
	echo.do(`{"type":"candidate","name":"alice","candidate":null}`)
	echo.expect(map[string]any{"type": "error", "code": "not_in_call"})
	echo.do(`{"type":"candidate","name":"bob","candidate":null}`)
	bob.expect(map[string]any{"type": "candidate"})

	// The echo user hangs up on bob.
	echo.do(`{"type":"leave","name":"bob","reason":"hangup"}`)
	bob.expect(map[string]any{"type": "leave", "name": "echo", "reason": "hangup"})
	bob.do(`{"type":"leave","name":"echo"}`)
	bob.expect(map[string]any{"type": "error", "code": "not_in_call"})

	// Carol calls it; she resumes on a new connection and the call goes on; then the echo user disconnects.
	carol.do(`{"type":"offer","name":"echo","offer":{}}`)
	carol.expect(map[string]any{"type": "ringing"})
	echo.expect(map[string]any{"type": "offer", "name": "carol"})
	carol.do(`{"type":"login","name":"carol"}`)
	token := carol.c.next()["token"].(string)
	carol2 := echoLogin(t, h, "carol", token)
	echo.do(`{"type":"candidate","name":"carol","candidate":null}`)
	carol2.expect(map[string]any{"type": "candidate", "name": "echo"})
	echo.s.OnClose()
	carol2.expect(map[string]any{"type": "leave", "name": "echo", "reason": "disconnected"})
	if alice.c.next() != nil || bob.c.next() != nil {
		t.Fatal("users not in a call with the echo user were told")
	}
}

// TestEchoUserResumes: when the echo user takes its name over with its token, its calls follow it.
func TestEchoUserResumes(t *testing.T) {
	h := New(Config{EchoName: "echo"})
	echo := echoLogin(t, h, "echo", "")
	echo.do(`{"type":"login","name":"echo"}`)
	token := echo.c.next()["token"].(string)
	alice := echoLogin(t, h, "alice", "")
	alice.do(`{"type":"offer","name":"echo","offer":{}}`)
	alice.expect(map[string]any{"type": "ringing"})

	echo2 := echoLogin(t, h, "echo", token)
	echo2.do(`{"type":"answer","name":"alice","answer":{}}`)
	alice.expect(map[string]any{"type": "answer", "name": "echo"})
	alice.do(`{"type":"leave"}`)
	echo2.expect(map[string]any{"type": "leave", "name": "alice"})
	echo.s.OnClose() // the replaced connection closes: nobody is told
	if m := alice.c.next(); m != nil {
		t.Fatalf("alice got %v", m)
	}
}

// TestEchoNameReserved: with an echo token, the echo name and its case variants are refused to anyone without
// the token, also while the echo user is offline; the token logs in, and takes the name over from a lingering
// connection with the echo user's calls.
func TestEchoNameReserved(t *testing.T) {
	h := New(Config{EchoName: "echo", EchoToken: "secret"})
	thief := &echoUser{t: t, c: &echoConn{}}
	thief.s = h.Connect(thief.c, "127.0.0.1")
	refused := func() {
		t.Helper()
		for _, try := range []struct{ name, token string }{{"echo", ""}, {"echo", "secreT"}, {"Echo", "secret"}, {" ECHO ", ""}} {
			thief.do(`{"type":"login","name":"` + try.name + `","token":"` + try.token + `"}`)
			thief.expect(map[string]any{"type": "login", "success": false, "code": "name_taken",
				"message": "the name " + strings.TrimSpace(try.name) + " is reserved for the echo test user: choose another"})
		}
	}
	refused()
	echo := echoLogin(t, h, "echo", "secret")
	refused()
	alice := echoLogin(t, h, "alice", "")
	alice.do(`{"type":"offer","name":"echo","offer":{}}`)
	alice.expect(map[string]any{"type": "ringing"})
	echo.expect(map[string]any{"type": "offer", "name": "alice"})
	// The echo peer reconnects while its old connection lingers: the token takes the name and the call over.
	echo2 := echoLogin(t, h, "echo", "secret")
	echo2.do(`{"type":"answer","name":"alice","answer":{}}`)
	alice.expect(map[string]any{"type": "answer", "name": "echo"})
	echo.s.OnClose()
	if m := alice.c.next(); m != nil {
		t.Fatalf("alice got %v", m)
	}
	echo2.s.OnClose()
	alice.expect(map[string]any{"type": "leave", "name": "echo", "reason": "disconnected"})
	refused()
	thief.do(`{"type":"login","name":"echo2"}`)
	thief.expect(map[string]any{"type": "login", "success": true})
}

// TestEchoMaxCalls: the echo user is in at most EchoMaxCalls calls; a caller beyond is told the line is full.
func TestEchoMaxCalls(t *testing.T) {
	h := New(Config{EchoName: "echo", EchoMaxCalls: 2})
	echo := echoLogin(t, h, "echo", "")
	var callers []*echoUser
	for i := range 3 {
		u := echoLogin(t, h, "u"+strings.Repeat("x", i), "")
		callers = append(callers, u)
		u.do(`{"type":"offer","name":"echo","offer":{}}`)
	}
	callers[0].expect(map[string]any{"type": "ringing"})
	callers[1].expect(map[string]any{"type": "ringing"})
	callers[2].expect(map[string]any{"type": "error", "code": "busy", "name": "echo",
		"message": "the test line is full: 2 test calls are in progress, try again in a moment"})
	// A renegotiation within a call is not a new call.
	callers[1].do(`{"type":"offer","name":"echo","offer":{}}`)
	if m := callers[1].c.next(); m != nil {
		t.Fatalf("renegotiation: %v", m)
	}
	echo.do(`{"type":"leave","name":"u"}`)
	callers[2].do(`{"type":"offer","name":"echo","offer":{}}`)
	callers[2].expect(map[string]any{"type": "ringing"})
}

// TestEchoUserMakesNoCalls: the echo user's offer to one of its callers is a renegotiation of that call; to
// anyone else it is refused (found by FuzzHub: it made the user its peer without being in its callers).
func TestEchoUserMakesNoCalls(t *testing.T) {
	h := New(Config{EchoName: "echo"})
	echo := echoLogin(t, h, "echo", "")
	alice := echoLogin(t, h, "alice", "")
	bob := echoLogin(t, h, "bob", "")
	echo.do(`{"type":"offer","name":"bob","offer":{}}`)
	echo.expect(map[string]any{"type": "error", "code": "not_in_call", "name": "bob"})
	if m := bob.c.next(); m != nil {
		t.Fatalf("bob got %v", m)
	}
	alice.do(`{"type":"offer","name":"echo","offer":{}}`)
	alice.expect(map[string]any{"type": "ringing"})
	echo.expect(map[string]any{"type": "offer"})
	echo.do(`{"type":"offer","name":"alice","offer":{}}`)
	alice.expect(map[string]any{"type": "offer", "name": "echo"})
	bob.do(`{"type":"offer","name":"alice","offer":{}}`)
	bob.expect(map[string]any{"type": "error", "code": "busy"})
}
