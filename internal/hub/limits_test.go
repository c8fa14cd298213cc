package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"tandem/protocol"
)

// clock replaces h's clock with one the test moves.
type clock struct{ t int64 }

func fakeClock(h *Hub) *clock {
	c := &clock{t: int64(time.Hour)}
	h.now = func() int64 { return c.t }
	return c
}

func (c *clock) advance(d time.Duration) { c.t += int64(d) }

// checkIndex fails the test unless h's user map and index hold exactly the same sessions, in order, under their
// names.
func checkIndex(t *testing.T, h *Hub) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := indexError(h); err != nil {
		t.Fatal(err)
	}
}

func indexError(h *Hub) error {
	if h.index.Len() != len(h.users) {
		return fmt.Errorf("%d users but %d indexed", len(h.users), h.index.Len())
	}
	var prev *Session
	var err error
	h.index.Ascend(func(s *Session) bool {
		switch {
		case s.name == "" || s.key != fold(s.name):
			err = fmt.Errorf("indexed session with name %q key %q", s.name, s.key)
		case h.users[s.name] != s:
			err = fmt.Errorf("indexed %q is not the user of that name", s.name)
		case prev != nil && !(prev.key < s.key || prev.key == s.key && prev.name < s.name):
			err = fmt.Errorf("index out of order: %q before %q", prev.name, s.name)
		}
		prev = s
		return err == nil
	})
	return err
}

// TestResumeKeepsIndex resumes sessions while their old connections are open, in and out of calls, from fresh
// connections and from logged-in ones: the index must list exactly the users online, and nothing once they left.
func TestResumeKeepsIndex(t *testing.T) {
	h := New(Config{})
	var all []*user
	login := func(name, token string) *user {
		u := connect(t, h)
		all = append(all, u)
		u.send(`{"type":"login","name":"` + name + `","token":"` + token + `"}`)
		got := u.c.take()
		if len(got) != 1 || got[0]["success"] != true {
			t.Fatalf("login %s: %v", name, got)
		}
		return u
	}
	var tokens = map[string]string{}
	for _, n := range []string{"Mia", "bob", "alice", "Zed", "carl", "dora", "eve", "fay"} {
		login(n, "")
		tokens[n] = tokenOf(h, n)
	}
	checkIndex(t, h)
	for i := range 5 {
		login("alice", tokens["alice"])
		checkIndex(t, h)
		u := login("tmp"+fmt.Sprint(i), "") // a logged-in connection resumes another session
		u.send(`{"type":"login","name":"bob","token":"` + tokens["bob"] + `"}`)
		if got := u.c.take(); len(got) != 1 || got[0]["success"] != true {
			t.Fatalf("resume from a logged-in connection: %v", got)
		}
		checkIndex(t, h)
	}
	q := connect(t, h)
	q.send(`{"type":"users"}`)
	got := q.c.take()[0]
	if fmt.Sprint(got["users"]) != "[map[busy:false name:alice] map[busy:false name:bob] map[busy:false name:carl] map[busy:false name:dora] map[busy:false name:eve] map[busy:false name:fay] map[busy:false name:Mia] map[busy:false name:Zed]]" {
		t.Fatalf("users = %v", got["users"])
	}
	for _, u := range all {
		u.s.OnClose()
	}
	checkIndex(t, h)
	if h.Online() != 0 || h.index.Len() != 0 {
		t.Fatalf("%d online, %d indexed after everyone left", h.Online(), h.index.Len())
	}
}

// tokenOf returns the resume token of the user name.
func tokenOf(h *Hub, name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.users[name].token
}

// TestStrangerBudget: before the callee accepts, a caller gets an offer and candidates up to the budget through;
// past it each message is refused with not_answered and the callee gets nothing more. The answer lifts it.
func TestStrangerBudget(t *testing.T) {
	h := New(Config{})
	fakeClock(h)
	a, b := connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})
	b.expect(msg{"type": "offer"})
	for range unansweredMessages - 1 {
		a.send(`{"type":"candidate","candidate":{},"name":"b"}`)
	}
	a.expect()
	if got := b.c.take(); len(got) != unansweredMessages-1 {
		t.Fatalf("callee got %d candidates, want %d", len(got), unansweredMessages-1)
	}
	a.send(`{"type":"candidate","candidate":{},"name":"b"}`)
	a.expect(msg{"type": "error", "code": "not_answered", "request": "candidate", "name": "b"})
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "error", "code": "not_answered", "request": "offer"})
	b.expect()
	// The callee answers: the call is accepted, and the limit is gone.
	b.send(`{"type":"answer","answer":{},"name":"a"}`)
	a.expect(msg{"type": "answer"})
	for range 2 * unansweredMessages {
		a.send(`{"type":"candidate","candidate":{},"name":"b"}`)
	}
	a.expect()
	if got := b.c.take(); len(got) != 2*unansweredMessages {
		t.Fatalf("callee got %d candidates after answering", len(got))
	}

	// Bytes count too: two large candidates fit in the budget, the third does not.
	c, d := connect(t, h), connect(t, h)
	c.login("c")
	d.login("d")
	c.send(`{"type":"offer","offer":{},"name":"d"}`)
	c.take()
	d.take()
	big := `{"type":"candidate","candidate":{"candidate":"` + strings.Repeat("x", 60<<10) + `"},"name":"d"}`
	c.send(big)
	c.send(big)
	c.expect()
	c.send(big)
	c.expect(msg{"code": "not_answered"})
	if got := d.c.take(); len(got) != 2 {
		t.Fatalf("callee got %d large candidates", len(got))
	}
	// The callee offering back (glare) accepts the call too.
	d.send(`{"type":"offer","offer":{},"name":"c"}`)
	c.expect(msg{"type": "offer"})
	c.send(big)
	d.expect(msg{"type": "candidate"})
}

// TestRingingAgainSpendsBudget: ringing the same user again and again without an answer (offer, cancel, offer...)
// spends one budget, which a rename or a resume does not renew; the caller is then told how long to wait, and the
// budget refills with time.
func TestRingingAgainSpendsBudget(t *testing.T) {
	h := New(Config{})
	clk := fakeClock(h)
	a, b := connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	ring := func(u *user) map[string]any {
		t.Helper()
		u.send(`{"type":"offer","offer":{},"name":"b"}`)
		got := u.c.take()
		if len(got) != 1 {
			t.Fatalf("offer: %v", got)
		}
		return got[0]
	}
	for i := range unansweredMessages {
		if m := ring(a); m["type"] != "ringing" {
			t.Fatalf("call %d: %v", i, m)
		}
		switch i % 3 {
		case 0:
			a.send(`{"type":"leave","name":"b","reason":"cancelled"}`)
		case 1:
			a.send(`{"type":"login","name":"a` + fmt.Sprint(i) + `"}`) // a rename ends the call
			a.take()
		case 2: // a reconnects and resumes
			tok := tokenOf(h, a.s.name)
			a2 := connect(t, h)
			a2.send(`{"type":"login","name":"` + a.s.name + `","token":"` + tok + `"}`)
			a2.take()
			a.s.OnClose()
			a = a2
			a.send(`{"type":"leave","name":"b","reason":"cancelled"}`)
		}
	}
	b.take()
	m := ring(a)
	if m["code"] != "cooldown" || m["retryAfter"] != 1.0 || !strings.Contains(m["message"].(string), "has not answered") {
		t.Fatalf("after %d unanswered calls: %v", unansweredMessages, m)
	}
	b.expect()
	clk.advance(unansweredRefill / unansweredMessages)
	if m := ring(a); m["type"] != "ringing" {
		t.Fatalf("after the budget refilled by one: %v", m)
	}
	b.expect(msg{"type": "offer"})
}

// TestCallCooldown: after a decline (or no_answer) the caller may not ring that user again until the cooldown is
// over, and is told how long that is; calls to others, and by others, are not affected.
func TestCallCooldown(t *testing.T) {
	h := New(Config{})
	clk := fakeClock(h)
	a, b, c := connect(t, h), connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	c.login("c")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.take()
	b.take()
	b.send(`{"type":"leave","name":"a","reason":"declined"}`)
	a.expect(msg{"type": "leave", "reason": "declined"})
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "error", "code": "cooldown", "name": "b", "retryAfter": 30,
		"message": "b declined your call: you can call b again in 30 s"})
	clk.advance(DefaultCallCooldown - 1500*time.Millisecond)
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"code": "cooldown", "retryAfter": 2})
	c.send(`{"type":"offer","offer":{},"name":"b"}`)
	c.expect(msg{"type": "ringing"})
	b.expect(msg{"type": "offer", "name": "c"})
	c.send(`{"type":"leave","name":"b","reason":"no_answer"}`)
	b.expect(msg{"type": "leave", "reason": "no_answer"})
	c.send(`{"type":"offer","offer":{},"name":"b"}`)
	c.expect(msg{"code": "cooldown", "message": "b did not answer your call: you can call b again in 30 s"})
	clk.advance(1500 * time.Millisecond)
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})
	b.expect(msg{"type": "offer", "name": "a"})
	// The callee's page gives up ringing (no_answer from the callee): the same cooldown.
	b.send(`{"type":"leave","name":"a","reason":"no_answer"}`)
	a.expect(msg{"type": "leave", "reason": "no_answer"})
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"code": "cooldown", "retryAfter": 30})
	clk.advance(DefaultCallCooldown)
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})
	b.expect(msg{"type": "offer", "name": "a"})
	// A decline by the caller, or a hangup, is no reason for a cooldown; nor is the end of an answered call.
	a.send(`{"type":"leave","name":"b","reason":"declined"}`)
	b.take()
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})
	b.take()
	b.send(`{"type":"answer","answer":{},"name":"a"}`)
	a.take()
	b.send(`{"type":"leave","name":"a","reason":"declined"}`)
	a.take()
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})

	// With no cooldown configured, a declined caller can ring again at once.
	h = New(Config{CallCooldown: -1})
	a, b = connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.take()
	b.send(`{"type":"leave","name":"a","reason":"declined"}`)
	a.take()
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})
}

// TestCallBackAfterDecline: b declines a, then rings a itself (and gives up): a may call b back at once, since
// b's own call says b wants to hear from a; the cooldown is b's protection from a, not a's from b.
func TestCallBackAfterDecline(t *testing.T) {
	h := New(Config{})
	fakeClock(h)
	a, b := connect(t, h), connect(t, h)
	a.login("a")
	b.login("b")
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.take()
	b.take()
	b.send(`{"type":"leave","name":"a","reason":"declined"}`)
	a.expect(msg{"type": "leave", "reason": "declined"})
	b.send(`{"type":"offer","offer":{},"name":"a"}`)
	b.expect(msg{"type": "ringing"})
	a.expect(msg{"type": "offer", "name": "b"})
	b.send(`{"type":"leave","name":"a","reason":"no_answer"}`)
	a.expect(msg{"type": "leave", "reason": "no_answer"})
	a.send(`{"type":"offer","offer":{},"name":"b"}`)
	a.expect(msg{"type": "ringing"})
	b.expect(msg{"type": "offer", "name": "a"})
}

// TestStrangersAreBounded: a user keeps records of at most maxStrangers callers; the oldest goes first.
func TestStrangersAreBounded(t *testing.T) {
	h := New(Config{})
	clk := fakeClock(h)
	b := connect(t, h)
	b.login("b")
	for i := range 3 * maxStrangers {
		a := connect(t, h)
		a.login(fmt.Sprint("caller", i))
		a.send(`{"type":"offer","offer":{},"name":"b"}`)
		a.expect(msg{"type": "ringing"})
		b.send(`{"type":"leave","reason":"declined"}`)
		clk.advance(time.Millisecond)
		a.s.OnClose()
	}
	h.mu.Lock()
	n := len(b.s.strangers)
	h.mu.Unlock()
	if n != maxStrangers {
		t.Fatalf("%d records of callers, want %d", n, maxStrangers)
	}
}

// TestRenegotiationRate: within a call, offers beyond a burst are refused as rate_limited until time lets more
// through; Config.Rate 0 lifts the limit.
func TestRenegotiationRate(t *testing.T) {
	for _, rate := range []float64{200, 0} {
		h := New(Config{Rate: rate, EchoName: "echo"})
		clk := fakeClock(h)
		a, b := connect(t, h), connect(t, h)
		a.login("a")
		b.login("b")
		a.send(`{"type":"offer","offer":{},"name":"b"}`)
		a.take()
		b.take()
		b.send(`{"type":"answer","answer":{},"name":"a"}`)
		a.take()
		for range offerBurst {
			a.send(`{"type":"offer","offer":{},"name":"b"}`)
		}
		a.expect()
		a.send(`{"type":"offer","offer":{},"name":"b"}`)
		if rate == 0 {
			a.expect()
			if got := b.c.take(); len(got) != offerBurst+1 {
				t.Fatalf("without a rate limit: %d offers relayed", len(got))
			}
			continue
		}
		a.expect(msg{"type": "error", "code": "rate_limited", "request": "offer"})
		if got := b.c.take(); len(got) != offerBurst {
			t.Fatalf("%d offers relayed, want %d", len(got), offerBurst)
		}
		clk.advance(offerInterval)
		a.send(`{"type":"offer","offer":{},"name":"b"}`)
		a.expect()
		b.expect(msg{"type": "offer"})
		a.send(`{"type":"offer","offer":{},"name":"b"}`)
		a.expect(msg{"code": "rate_limited"})
	}
}

// sessionLog records the session ids given to ICEServers and ended by SessionEnded.
type sessionLog struct {
	given []string
	ended map[string]int
}

func newSessionHub(cfg Config) (*Hub, *sessionLog) {
	l := &sessionLog{ended: map[string]int{}}
	cfg.ICEServers = func(name, host, session string) []protocol.ICEServer {
		l.given = append(l.given, session)
		return nil
	}
	cfg.SessionEnded = func(session string) { l.ended[session]++ }
	return New(cfg), l
}

func (l *sessionLog) last() string { return l.given[len(l.given)-1] }

// TestSessionIDs: every login, rename and resume gets a new session id and tells the transport it logged in;
// every login's id is ended once, when it ends (rename, resume, close, shutdown), and never before.
func TestSessionIDs(t *testing.T) {
	h, l := newSessionHub(Config{})
	a := connect(t, h)
	a.login("a")
	s1 := l.last()
	a.login("a") // the same name again: the same login
	if l.last() != s1 || len(l.ended) != 0 {
		t.Fatalf("a repeated login changed the session: %v, ended %v", l.given, l.ended)
	}
	a.login("a2")
	s2 := l.last()
	if s2 == s1 || l.ended[s1] != 1 || l.ended[s2] != 0 {
		t.Fatalf("rename: given %v, ended %v", l.given, l.ended)
	}
	tok := tokenOf(h, "a2")
	b := connect(t, h)
	b.send(`{"type":"login","name":"a2","token":"` + tok + `"}`)
	b.take()
	s3 := l.last()
	if s3 == s2 || l.ended[s2] != 1 || l.ended[s3] != 0 {
		t.Fatalf("resume: given %v, ended %v", l.given, l.ended)
	}
	a.s.OnClose() // the replaced connection: its session already ended
	if len(l.ended) != 2 {
		t.Fatalf("closing the replaced connection: ended %v", l.ended)
	}
	c := connect(t, h)
	c.login("c")
	s4 := l.last()
	thief := connect(t, h)
	thief.send(`{"type":"login","name":"c","token":"nope"}`)
	thief.take()
	if len(l.given) != 5 { // s1 twice (the repeated login's reply has ICE servers too), s2, s3, s4
		t.Fatalf("a failed login was given a session: %v", l.given)
	}
	b.s.OnClose()
	if l.ended[s3] != 1 {
		t.Fatalf("close: ended %v", l.ended)
	}
	h.Shutdown()
	c.s.OnClose()
	if l.ended[s4] != 1 {
		t.Fatalf("shutdown: ended %v", l.ended)
	}
	unique := map[string]bool{}
	for _, id := range []string{s1, s2, s3, s4} {
		unique[id] = true
		if len(id) < 22 {
			t.Fatalf("session id %q is short", id)
		}
		if l.ended[id] != 1 {
			t.Fatalf("session %s ended %d times", id, l.ended[id])
		}
	}
	if len(unique) != 4 || len(l.ended) != 4 {
		t.Fatalf("session ids %v, ended %v", l.given, l.ended)
	}
	for _, u := range []*user{a, b, c, thief} {
		want := map[*user]int{a: 3, b: 1, c: 1, thief: 0}[u]
		if u.c.loggedIn != want {
			t.Fatalf("LoggedIn called %d times, want %d", u.c.loggedIn, want)
		}
	}
}
