package server_test

// Tests of what one user can do to others through signaling (issue 11): each runs a real server on 127.0.0.1 and
// real WebSocket clients, and checks what the users see.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/server"
	"tandem/protocol"
)

// listUsers asks for the whole online list (up to 100) and returns the names in it and the total.
func listUsers(t *testing.T, c *client.Client, query string) ([]string, int) {
	t.Helper()
	if err := c.SendUsers(ctx5(t), query, 100); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitFor(ctx5(t), protocol.TypeUsers)
	if err != nil || m.Type != protocol.TypeUsers {
		t.Fatalf("users: %+v %v", m, err)
	}
	var names []string
	for _, u := range m.Users {
		names = append(names, u.Name)
	}
	return names, m.Total
}

// TestResumeKeepsOnlineList resumes a session while its old connection is still open, as a page reload does: the
// online list and search must go on listing exactly the users online, and a user who leaves must leave the list.
func TestResumeKeepsOnlineList(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	first := r.dial(nil)
	reply, err := first.Login(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	r.user("bob", nil)
	q := r.dial(nil)

	conns := []*client.Client{first}
	for i := range 3 { // three reloads in a row, each while the previous connection is still open
		c := r.dial(nil)
		if _, err := c.Login(ctx, "alice", reply.Token); err != nil {
			t.Fatalf("resume %d: %v", i, err)
		}
		if _, err := conns[len(conns)-1].Read(ctx); !errors.Is(err, client.ErrReplaced) {
			t.Fatalf("resume %d: old connection %v, want replaced", i, err)
		}
		conns = append(conns, c)
		if names, total := listUsers(t, q, ""); !slices.Equal(names, []string{"alice", "bob"}) || total != 2 {
			t.Fatalf("after resume %d: users %q, total %d; want [alice bob], 2", i, names, total)
		}
		if names, _ := listUsers(t, q, "AL"); !slices.Equal(names, []string{"alice"}) {
			t.Fatalf("after resume %d: search al: %q", i, names)
		}
	}
	// alice leaves for good: she leaves the list too, and her name is free.
	conns[len(conns)-1].Close()
	waitFor(t, func() bool { return r.Online() == 1 })
	if names, total := listUsers(t, q, ""); !slices.Equal(names, []string{"bob"}) || total != 1 {
		t.Fatalf("after alice left: users %q, total %d", names, total)
	}
	if names, _ := listUsers(t, q, "al"); len(names) != 0 {
		t.Fatalf("after alice left: search al: %q", names)
	}
	r.user("alice", nil)
}

// TestStrangerCannotFloodIdleUser: a stranger rings a user who is not reading (a tab in the background, a slow
// link) and then sends large candidates as fast as the rate limit lets it. The callee must stay connected and
// get no more than the small amount allowed before an answer; the stranger is told why the rest was refused.
func TestStrangerCannotFloodIdleUser(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)                                                 // the default limits: 1 MiB send queue, 200 messages a second in bursts of 1000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // 18 MB through a loaded machine
	defer cancel()
	stranger, idle := r.user("stranger", nil), r.user("idle", nil)
	if err := stranger.SendOffer(ctx, "idle", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	big := json.RawMessage(`{"candidate":"` + strings.Repeat("c", 60<<10) + `","sdpMid":"0"}`)
	const sent = 300 // 18 MB: far more than the callee's send queue and socket buffers hold
	refused := make(chan int, 1)
	go func() { // the stranger reads its replies, so that its own queue does not fill
		n := 0
		for {
			m, err := stranger.Read(ctx)
			if err != nil || m.Type == protocol.TypeUsers {
				refused <- n
				return
			}
			if m.Code == protocol.CodeNotAnswered && m.Name == "idle" && m.Message != "" {
				n++
			}
		}
	}()
	for range sent {
		if err := stranger.SendCandidate(ctx, "idle", big); err != nil {
			t.Fatal(err)
		}
	}
	if err := stranger.SendUsers(ctx, "", 0); err != nil { // answered after every candidate has been handled
		t.Fatal(err)
	}
	n := <-refused
	if r.Online() != 2 {
		t.Fatalf("%d users online: the idle callee was dropped", r.Online())
	}
	if n < sent-5 {
		t.Fatalf("the stranger was refused %d of %d candidates", n, sent)
	}
	// The callee reads now: the offer and a few candidates, no more than the budget, and the connection works.
	offer, err := idle.Read(ctx)
	if err != nil || offer.Type != protocol.TypeOffer || offer.Name != "stranger" {
		t.Fatalf("callee got %+v %v, want the offer", offer, err)
	}
	if err := idle.SendUsers(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	got := len(offer.Offer)
	for {
		m, err := idle.Read(ctx)
		if err != nil {
			t.Fatalf("callee: %v", err)
		}
		if m.Type == protocol.TypeUsers {
			break
		}
		if m.Type != protocol.TypeCandidate {
			t.Fatalf("callee got %+v", m)
		}
		got += len(m.Candidate)
	}
	if got > 128<<10 {
		t.Fatalf("the stranger pushed %d bytes to a callee who had not answered", got)
	}
}

// TestRenegotiationIsBounded: within an answered call, a caller sending offer after offer (each a renegotiation)
// gets only a few through at once, to a user and to the echo user alike; the rest are refused as rate_limited.
func TestRenegotiationIsBounded(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.EchoName, c.EchoToken = "echo", "echo-secret" })
	ctx := ctx5(t)
	echo := r.dial(nil)
	if _, err := echo.Login(ctx, "echo", "echo-secret"); err != nil {
		t.Fatal(err)
	}
	bob := r.user("bob", nil)
	for _, tc := range []struct {
		callee *client.Client
		name   string
	}{{bob, "bob"}, {echo, "echo"}} {
		callee, name, callerName := tc.callee, tc.name, "caller-of-"+tc.name
		caller := r.user(callerName, nil)
		if err := caller.SendOffer(ctx, name, json.RawMessage(offerSDP)); err != nil {
			t.Fatal(err)
		}
		if m := next(t, caller); m.Type != protocol.TypeRinging {
			t.Fatalf("caller of %s: %+v", name, m)
		}
		if m, err := callee.WaitFor(ctx, protocol.TypeOffer); err != nil || m.Type != protocol.TypeOffer {
			t.Fatalf("%s: %+v %v", name, m, err)
		}
		if err := callee.SendAnswer(ctx, callerName, json.RawMessage(answerSDP)); err != nil {
			t.Fatal(err)
		}
		if m := next(t, caller); m.Type != protocol.TypeAnswer {
			t.Fatalf("caller of %s: %+v", name, m)
		}
		const offers = 30
		for range offers {
			if err := caller.SendOffer(ctx, name, json.RawMessage(offerSDP)); err != nil {
				t.Fatal(err)
			}
		}
		if err := caller.SendLeave(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
		relayed := 0
		for {
			m := next(t, callee)
			if m.Type == protocol.TypeLeave {
				break
			}
			if m.Type != protocol.TypeOffer {
				t.Fatalf("%s got %+v", name, m)
			}
			relayed++
		}
		limited := 0
		for range offers - relayed {
			if m := next(t, caller); m.Code == protocol.CodeRateLimited && m.Request == protocol.TypeOffer {
				limited++
			}
		}
		if relayed+limited != offers || relayed > 8 { // 5 at once, and one for every 2 s the test takes
			t.Fatalf("%s: %d renegotiation offers relayed, %d refused, of %d", name, relayed, limited, offers)
		}
	}
}

// TestDeclinedCallerCoolsDown: a caller who is declined cannot ring the same user again at once (it is told how
// long to wait), so the callee is free for others; the same after the caller gave up with no_answer.
func TestDeclinedCallerCoolsDown(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	pest, bob, carol := r.user("pest", nil), r.user("bob", nil), r.user("carol", nil)
	ring := func(from *client.Client, to string) *client.Message {
		t.Helper()
		if err := from.SendOffer(ctx, to, json.RawMessage(offerSDP)); err != nil {
			t.Fatal(err)
		}
		return next(t, from)
	}
	if m := ring(pest, "bob"); m.Type != protocol.TypeRinging {
		t.Fatalf("first call: %+v", m)
	}
	next(t, bob)
	if err := bob.SendLeave(ctx, "pest", protocol.ReasonDeclined); err != nil {
		t.Fatal(err)
	}
	if m := next(t, pest); m.Type != protocol.TypeLeave || m.Reason != protocol.ReasonDeclined {
		t.Fatalf("got %+v", m)
	}
	for range 3 {
		m := ring(pest, "bob")
		if m.Code != protocol.CodeCooldown || m.Name != "bob" || m.RetryAfter < 25 || m.RetryAfter > 30 ||
			!strings.Contains(m.Message, "declined") {
			t.Fatalf("call again after a decline: %+v, want a cooldown of 30 s", m)
		}
	}
	// Bob was not rung again: carol's call reaches him.
	if m := ring(carol, "bob"); m.Type != protocol.TypeRinging {
		t.Fatalf("carol's call: %+v", m)
	}
	if m := next(t, bob); m.Type != protocol.TypeOffer || m.Name != "carol" {
		t.Fatalf("bob got %+v, want carol's offer", m)
	}
	// Carol gives up unanswered: she too must wait before ringing bob again; but she may call pest.
	if err := carol.SendLeave(ctx, "bob", protocol.ReasonNoAnswer); err != nil {
		t.Fatal(err)
	}
	next(t, bob)
	if m := ring(carol, "bob"); m.Code != protocol.CodeCooldown || m.RetryAfter < 1 {
		t.Fatalf("call again after no_answer: %+v", m)
	}
	if m := ring(carol, "pest"); m.Type != protocol.TypeRinging {
		t.Fatalf("carol calls pest: %+v", m)
	}
	// A call that was answered may be ended and made again at once.
	next(t, pest)
	if err := pest.SendAnswer(ctx, "carol", json.RawMessage(answerSDP)); err != nil {
		t.Fatal(err)
	}
	next(t, carol)
	if err := carol.SendLeave(ctx, "pest", protocol.ReasonHangup); err != nil {
		t.Fatal(err)
	}
	next(t, pest)
	if m := ring(carol, "pest"); m.Type != protocol.TypeRinging {
		t.Fatalf("carol calls pest again: %+v", m)
	}
}

// TestEchoNameIsReserved: with an echo token, only the echo peer (which has it) can log in as the echo user,
// also while its connection is down, and names that differ from it only in case are refused too.
func TestEchoNameIsReserved(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.EchoName, c.EchoToken = "echo", "the-echo-token" })
	ctx := ctx5(t)
	thief := r.dial(nil)
	try := func(name, token string) {
		t.Helper()
		_, err := thief.Login(ctx, name, token)
		var e *client.Error
		if !errors.As(err, &e) || e.Code != protocol.CodeNameTaken || !strings.Contains(e.Message, "reserved") {
			t.Fatalf("login %q with token %q: %v, want name_taken (reserved)", name, token, err)
		}
	}
	for _, name := range []string{"echo", "Echo", " ECHO "} {
		try(name, "")
		try(name, "guess")
	}
	peer := r.dial(nil)
	if _, err := peer.Login(ctx, "echo", "the-echo-token"); err != nil {
		t.Fatalf("the echo peer: %v", err)
	}
	// Its connection drops: nobody else can take the name meanwhile; the peer takes it back at once.
	peer.CloseNow()
	waitFor(t, func() bool { return r.Online() == 0 })
	try("echo", "")
	peer = r.dial(nil)
	if _, err := peer.Login(ctx, "echo", "the-echo-token"); err != nil {
		t.Fatalf("the echo peer again: %v", err)
	}
	// A second echo peer with the token (a reconnect while the old connection lingers) takes the line over.
	again := r.dial(nil)
	if _, err := again.Login(ctx, "echo", "the-echo-token"); err != nil {
		t.Fatalf("the echo peer's reconnect: %v", err)
	}
	if _, err := peer.Read(ctx); !errors.Is(err, client.ErrReplaced) {
		t.Fatalf("old echo connection: %v, want replaced", err)
	}
	alice := r.user("alice", nil)
	if err := alice.SendOffer(ctx, "echo", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, again); m.Type != protocol.TypeOffer || m.Name != "alice" {
		t.Fatalf("echo peer got %+v", m)
	}
	try("echo", "")
}

// TestEchoCallsAreBounded: the echo user takes EchoMaxCalls calls at once; a caller beyond them is told the test
// line is busy, and gets through once a call ends.
func TestEchoCallsAreBounded(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.EchoName, c.EchoToken, c.EchoMaxCalls = "echo", "tok", 2 })
	ctx := ctx5(t)
	echo := r.dial(nil)
	if _, err := echo.Login(ctx, "echo", "tok"); err != nil {
		t.Fatal(err)
	}
	users := []*client.Client{r.user("u1", nil), r.user("u2", nil), r.user("u3", nil)}
	for i, u := range users {
		if err := u.SendOffer(ctx, "echo", json.RawMessage(offerSDP)); err != nil {
			t.Fatal(err)
		}
		m := next(t, u)
		if i < 2 && m.Type != protocol.TypeRinging {
			t.Fatalf("caller %d: %+v", i, m)
		}
		if i == 2 && (m.Code != protocol.CodeBusy || m.Name != "echo" || !strings.Contains(m.Message, "test line is full")) {
			t.Fatalf("third caller: %+v, want busy (the test line is full)", m)
		}
	}
	if err := users[0].SendLeave(ctx, "echo", ""); err != nil {
		t.Fatal(err)
	}
	if err := users[2].SendOffer(ctx, "echo", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, users[2]); m.Type != protocol.TypeRinging {
		t.Fatalf("third caller after a call ended: %+v", m)
	}
}

// sessions records the session ids the hub gives to ICEServers and ends with SessionEnded.
type sessions struct {
	mu      sync.Mutex
	given   map[string]string // session id -> user name
	ended   map[string]int    // session id -> times ended
	ordered []string
}

func (s *sessions) iceServers(name, host, session string) []protocol.ICEServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.given[session] = name
	s.ordered = append(s.ordered, session)
	return []protocol.ICEServer{{URLs: []string{"stun:" + host}}}
}

func (s *sessions) sessionEnded(session string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended[session]++
}

func (s *sessions) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ordered[len(s.ordered)-1]
}

func (s *sessions) endedTimes(session string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended[session]
}

// TestSessionIDsFollowLogins: each login, rename and resume gets a new unguessable session id for its ICE
// servers, and the id is ended when that login ends (rename, resume, close, shutdown), once.
func TestSessionIDsFollowLogins(t *testing.T) {
	t.Parallel()
	rec := &sessions{given: map[string]string{}, ended: map[string]int{}}
	r := startServer(t, func(c *server.Config) { c.ICEServers, c.SessionEnded = rec.iceServers, rec.sessionEnded })
	ctx := ctx5(t)
	a := r.dial(nil)
	if _, err := a.Login(ctx, "alice", ""); err != nil {
		t.Fatal(err)
	}
	s1 := rec.last()
	if len(s1) < 22 || rec.endedTimes(s1) != 0 {
		t.Fatalf("first session %q (ended %d times)", s1, rec.endedTimes(s1))
	}
	reply, err := a.Login(ctx, "alice2", "") // rename
	if err != nil {
		t.Fatal(err)
	}
	s2 := rec.last()
	if s2 == s1 || rec.endedTimes(s1) != 1 || rec.endedTimes(s2) != 0 {
		t.Fatalf("rename: %q after %q, first ended %d times", s2, s1, rec.endedTimes(s1))
	}
	b := r.dial(nil)
	if _, err := b.Login(ctx, "alice2", reply.Token); err != nil { // resume
		t.Fatal(err)
	}
	s3 := rec.last()
	if _, err := a.Read(ctx); !errors.Is(err, client.ErrReplaced) {
		t.Fatalf("resumed connection: %v, want replaced", err)
	}
	if s3 == s2 || rec.endedTimes(s2) != 1 || rec.endedTimes(s3) != 0 {
		t.Fatalf("resume: %q after %q, replaced one ended %d times", s3, s2, rec.endedTimes(s2))
	}
	b.Close()
	waitFor(t, func() bool { return rec.endedTimes(s3) == 1 })
	c := r.dial(nil)
	if _, err := c.Login(ctx, "carol", ""); err != nil {
		t.Fatal(err)
	}
	s4 := rec.last()
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop() }()
	if _, err := c.Read(ctx); !errors.Is(err, client.ErrGoingAway) {
		t.Fatalf("got %v, want going away", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.given) != 4 || rec.ended[s4] != 1 {
		t.Fatalf("sessions given %v, ended %v", rec.given, rec.ended)
	}
	for id, n := range rec.ended {
		if n != 1 {
			t.Fatalf("session %q ended %d times", id, n)
		}
	}
}
