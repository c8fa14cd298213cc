package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"tandem/client"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// running is a tandem server serving on 127.0.0.1 for one test.
type running struct {
	*servertest.Server
	t *testing.T
}

// startServer runs a real server on a loopback port until the test ends (or stop is called).
func startServer(t *testing.T, change func(*server.Config)) *running {
	t.Helper()
	return &running{Server: servertest.Start(t, change), t: t}
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects a client, closed when the test ends.
func (r *running) dial(opts *client.Options) *client.Client {
	r.t.Helper()
	c, err := client.Dial(ctx5(r.t), r.URL, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.CloseNow() })
	return c
}

// user connects and logs in.
func (r *running) user(name string, opts *client.Options) *client.Client {
	r.t.Helper()
	c := r.dial(opts)
	if _, err := c.Login(ctx5(r.t), name, ""); err != nil {
		r.t.Fatal(err)
	}
	return c
}

// next reads the next message, failing the test if none comes within 5 s.
func next(t *testing.T, c *client.Client) *client.Message {
	t.Helper()
	m, err := c.Read(ctx5(t))
	if err != nil {
		t.Fatalf("no message: %v", err)
	}
	return m
}

// expectError reads the next message and checks that it is an error with code.
func expectError(t *testing.T, c *client.Client, code string) *client.Message {
	t.Helper()
	m := next(t, c)
	if m.Type != protocol.TypeError || m.Code != code || m.Message == "" {
		t.Fatalf("got %+v, want an error %s with a message", m, code)
	}
	return m
}

func send(t *testing.T, c *client.Client, msg string) {
	t.Helper()
	if err := c.Send(ctx5(t), []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

const (
	offerSDP  = `{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`
	answerSDP = `{"type":"answer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`
	candidate = `{"candidate":"candidate:842163049 1 udp 1677729535 127.0.0.1 46154 typ srflx","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsXo"}`
)

// TestTutorialProtocol makes a whole call with clients that behave exactly as the tutorial's browser client does
// (name on every message, candidates included; no tandem fields), and checks every relayed message field by field
// and payload byte for byte.
func TestTutorialProtocol(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	tut := &client.Options{Tutorial: true}
	a, b := r.dial(tut), r.dial(tut)
	ctx := ctx5(t)

	// No "Hello world": the first frame is the reply to login, and it is JSON.
	if err := a.SendLogin(ctx, "alice", ""); err != nil {
		t.Fatal(err)
	}
	raw, err := a.ReadRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Type    string `json:"type"`
		Success *bool  `json:"success"`
	}
	if json.Unmarshal(raw, &login) != nil || login.Type != "login" || login.Success == nil || !*login.Success {
		t.Fatalf("first frame %s", raw)
	}
	if _, err := b.Login(ctx, "bob", ""); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		from, to *client.Client
		send     string
		want     string // the exact frame the other user receives
	}{
		{a, b, `{"type":"offer","offer":` + offerSDP + `,"name":"bob"}`, `{"type":"offer","offer":` + offerSDP + `,"name":"alice"}`},
		{b, a, `{"type":"answer","answer":` + answerSDP + `,"name":"alice"}`, `{"type":"answer","answer":` + answerSDP + `,"name":"bob"}`},
		{a, b, `{"type":"candidate","candidate":` + candidate + `,"name":"bob"}`, `{"type":"candidate","candidate":` + candidate + `,"name":"alice"}`},
		{b, a, `{"type":"candidate","candidate":` + candidate + `,"name":"alice"}`, `{"type":"candidate","candidate":` + candidate + `,"name":"bob"}`},
		{a, b, `{"type":"leave","name":"bob"}`, `{"type":"leave","name":"alice","reason":"hangup"}`},
	}
	for i, s := range steps {
		send(t, s.from, s.send)
		got, err := s.to.ReadRaw(ctx)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if string(got) != s.want {
			t.Fatalf("step %d: got %s\nwant %s", i, got, s.want)
		}
		if i == 0 { // the caller hears it ringing (a tandem addition the tutorial client ignores)
			m := next(t, a)
			if m.Type != protocol.TypeRinging || m.Name != "bob" {
				t.Fatalf("caller got %+v", m)
			}
		}
	}
}

// TestTutorialCrashes replays the ordinary uses that crash the tutorial's server, and checks that everybody else
// carries on.
func TestTutorialCrashes(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	bystanderA, bystanderB := r.user("carol", nil), r.user("dave", nil)
	if err := bystanderA.SendOffer(ctx, "dave", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	next(t, bystanderB)
	next(t, bystanderA) // ringing

	// 1. leave to a user who is not online.
	a := r.user("alice", nil)
	if err := a.SendLeave(ctx, "nobody", ""); err != nil {
		t.Fatal(err)
	}
	expectError(t, a, protocol.CodeNotOnline)

	// 2. the callee closes the tab first, then the caller closes (crashed on the caller's close).
	b := r.user("bob", nil)
	if err := a.SendOffer(ctx, "bob", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	next(t, b)
	next(t, a) // ringing
	b.CloseNow()
	if m := next(t, a); m.Type != protocol.TypeLeave || m.Name != "bob" || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("caller got %+v, want leave from bob", m)
	}
	a.Close()

	// The bystanders' call still works, and the freed names can be used again.
	if err := bystanderB.SendAnswer(ctx, "carol", json.RawMessage(answerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, bystanderA); m.Type != protocol.TypeAnswer || string(m.Answer) != answerSDP {
		t.Fatalf("bystander got %+v", m)
	}
	r.user("alice", nil)
	r.user("bob", nil)
}

func TestRefusedMessages(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	anon := r.dial(nil)
	a := r.user("alice", nil)
	b := r.user("bob", nil)
	tests := []struct {
		name string
		from *client.Client
		send string
		code string
	}{
		{"offer before login", anon, `{"type":"offer","offer":{},"name":"alice"}`, protocol.CodeNotLoggedIn},
		{"answer before login", anon, `{"type":"answer","answer":{},"name":"alice"}`, protocol.CodeNotLoggedIn},
		{"candidate before login", anon, `{"type":"candidate","candidate":{},"name":"alice"}`, protocol.CodeNotLoggedIn},
		{"leave before login", anon, `{"type":"leave","name":"alice"}`, protocol.CodeNotLoggedIn},
		{"offer to nobody", a, `{"type":"offer","offer":{},"name":"nobody"}`, protocol.CodeNotOnline},
		{"offer to self", a, `{"type":"offer","offer":{},"name":"alice"}`, protocol.CodeSelfCall},
		{"answer without a call", a, `{"type":"answer","answer":{},"name":"bob"}`, protocol.CodeNotInCall},
		{"candidate without a call", a, `{"type":"candidate","candidate":{},"name":"bob"}`, protocol.CodeNotInCall},
		{"unknown type", a, `{"type":"dance"}`, protocol.CodeUnknownType},
		{"plain text", a, `Hello world`, protocol.CodeInvalidJSON},
		{"broken JSON", a, `{"type":"login",`, protocol.CodeInvalidJSON},
		{"array", a, `["login"]`, protocol.CodeInvalidMessage},
		{"number", a, `7`, protocol.CodeInvalidMessage},
		{"no type", a, `{"name":"x"}`, protocol.CodeInvalidMessage},
		{"object name", a, `{"type":"offer","offer":{},"name":{"x":1}}`, protocol.CodeInvalidMessage},
		{"string offer", a, `{"type":"offer","offer":"sdp","name":"bob"}`, protocol.CodeInvalidMessage},
		{"number candidate", a, `{"type":"candidate","candidate":5,"name":"bob"}`, protocol.CodeInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send(t, tt.from, tt.send)
			expectError(t, tt.from, tt.code)
		})
	}
	// Nobody else heard anything: bob's next message is the reply to his own request.
	if err := b.SendUsers(ctx5(t), "", 0); err != nil {
		t.Fatal(err)
	}
	if m := next(t, b); m.Type != protocol.TypeUsers || m.Total != 2 {
		t.Fatalf("bob got %+v", m)
	}
}

func TestBinaryAndOversizedMessages(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.MaxMessage = 4096 })
	ctx := ctx5(t)
	conn, _, err := websocket.Dial(ctx, r.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	read := func() string {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// A binary frame: an error, and the connection stays.
	if err := conn.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if got := read(); !strings.Contains(got, `"code":"binary_not_supported"`) {
		t.Fatalf("got %s", got)
	}
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"login","name":"big"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(); !strings.Contains(got, `"success":true`) {
		t.Fatalf("got %s", got)
	}
	// Over the limit: an error that says so, then close code 1009, and the name is free again.
	big := `{"type":"candidate","name":"x","candidate":{"c":"` + strings.Repeat("x", 5000) + `"}}`
	if err := conn.Write(ctx, websocket.MessageText, []byte(big)); err != nil {
		t.Fatal(err)
	}
	if got := read(); !strings.Contains(got, `"code":"too_large"`) || !strings.Contains(got, "4096") {
		t.Fatalf("got %s", got)
	}
	_, _, err = conn.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("read after too large: %v", err)
	}
	waitFor(t, func() bool { return r.Online() == 0 })
	r.user("big", nil)
}

// waitFor polls cond until it holds (5 s at most): for state the server reaches on its own, with no event a
// client could wait on.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	c := r.dial(nil)
	ctx := ctx5(t)
	for _, name := range []string{"", "   ", strings.Repeat("n", 10000), strings.Repeat("é", 65), "tab\there", "nul\x00", "rtl\u202Eevil"} {
		_, err := c.Login(ctx, name, "")
		if !errors.Is(err, client.ErrInvalidName) {
			t.Errorf("login %.20q: %v, want invalid_name", name, err)
		}
	}
	for _, raw := range []string{`{"type":"login"}`, `{"type":"login","name":12}`, `{"type":"login","name":{}}`, `{"type":"login","name":["a"]}`} {
		send(t, c, raw)
		if m := next(t, c); m.Success || m.Code == "" {
			t.Errorf("%s: got %+v", raw, m)
		}
	}
	m, err := c.Login(ctx, "  Zoë 日本  ", "")
	if err != nil || m.Name != "Zoë 日本" {
		t.Fatalf("got %+v, %v", m, err)
	}
	other := r.dial(nil)
	if _, err := other.Login(ctx, "Zoë 日本", ""); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("taken name: %v", err)
	}
}

// TestSecondLogin checks the rule for a second login on one connection: it renames, and the old name is free at
// once; no name outlives its connection.
func TestSecondLogin(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	a := r.user("first", nil)
	if m, err := a.Login(ctx, "second", ""); err != nil || m.Name != "second" {
		t.Fatalf("rename: %+v %v", m, err)
	}
	b := r.user("first", nil) // free again
	if _, err := b.Login(ctx, "second", ""); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("second is still a's: %v", err)
	}
	a.Close()
	b.Close()
	waitFor(t, func() bool { return r.Online() == 0 })
}

func TestCalleeLeavesWhileRinging(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	a, b := r.user("caller", nil), r.user("callee", nil)
	if err := a.SendOffer(ctx, "callee", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, a); m.Type != protocol.TypeRinging {
		t.Fatalf("got %+v", m)
	}
	next(t, b)
	b.Close()
	if m := next(t, a); m.Type != protocol.TypeLeave || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("got %+v", m)
	}
}

func TestDeclineBusyAndGlare(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	a, b, c := r.user("a", nil), r.user("b", nil), r.user("c", nil)

	// Glare: both call at the same moment and end up as one pair.
	if err := a.SendOffer(ctx, "b", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if err := b.SendOffer(ctx, "a", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*client.Client{a, b} {
		m, err := u.WaitFor(ctx, protocol.TypeOffer)
		if err != nil || m.Type != protocol.TypeOffer {
			t.Fatalf("glare: %+v %v", m, err)
		}
	}
	// Busy: c calls b, who is in a call with a.
	if err := c.SendOffer(ctx, "b", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := expectError(t, c, protocol.CodeBusy); m.Name != "b" {
		t.Fatalf("got %+v", m)
	}
	// Decline: b refuses; a hears why, and both are free.
	if err := b.SendLeave(ctx, "a", protocol.ReasonDeclined); err != nil {
		t.Fatal(err)
	}
	m, err := a.WaitFor(ctx, protocol.TypeLeave)
	if err != nil || m.Reason != protocol.ReasonDeclined || m.Name != "b" {
		t.Fatalf("got %+v %v", m, err)
	}
	if err := c.SendOffer(ctx, "b", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if m, err := b.WaitFor(ctx, protocol.TypeOffer); err != nil || m.Name != "c" {
		t.Fatalf("got %+v %v", m, err)
	}
}

// TestResume reconnects with the resume token: the new connection takes the name (and the call) over at once, the
// old one is closed with 4000, and a wrong token takes nothing.
func TestResume(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	old := r.dial(nil)
	reply, err := old.Login(ctx, "alice", "")
	if err != nil || len(reply.Token) < 16 {
		t.Fatalf("login: %+v %v", reply, err)
	}
	bob := r.user("bob", nil)
	if err := bob.SendOffer(ctx, "alice", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	next(t, old)
	next(t, bob) // ringing

	thief := r.dial(nil)
	if _, err := thief.Login(ctx, "alice", "not-the-token"); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("wrong token: %v", err)
	}
	fresh := r.dial(nil)
	m, err := fresh.Login(ctx, "alice", reply.Token)
	if err != nil || m.Peer != "bob" || m.Token != reply.Token {
		t.Fatalf("resume: %+v %v", m, err)
	}
	if _, err := old.Read(ctx); !errors.Is(err, client.ErrReplaced) {
		t.Fatalf("old connection: %v, want closed as replaced", err)
	}
	// The call goes on through the new connection.
	if err := bob.SendCandidate(ctx, "alice", json.RawMessage(candidate)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, fresh); m.Type != protocol.TypeCandidate || m.Name != "bob" {
		t.Fatalf("got %+v", m)
	}
	if err := fresh.SendAnswer(ctx, "bob", json.RawMessage(answerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, bob); m.Type != protocol.TypeAnswer {
		t.Fatalf("got %+v", m)
	}
}

func TestUsersList(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.EchoName = "echo" })
	ctx := ctx5(t)
	for _, n := range []string{"alice", "Alan", "bob", "echo"} {
		r.user(n, nil)
	}
	q := r.dial(nil)
	if err := q.SendUsers(ctx, "al", 1); err != nil {
		t.Fatal(err)
	}
	m := next(t, q)
	if len(m.Users) != 1 || m.Users[0].Name != "Alan" || !m.More || m.Total != 4 {
		t.Fatalf("got %+v", m)
	}
	if err := q.SendUsers(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	m = next(t, q)
	if len(m.Users) != 4 || m.More || !m.Users[3].Echo || m.Users[0].Echo {
		t.Fatalf("got %+v", m)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.Rate, c.Burst = 1, 5 })
	c := r.dial(nil)
	ctx := ctx5(t)
	for i := 0; i < 8; i++ {
		if err := c.SendUsers(ctx, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	users, limited := 0, 0
	for i := 0; i < 8; i++ {
		switch m := next(t, c); {
		case m.Type == protocol.TypeUsers:
			users++
		case m.Code == protocol.CodeRateLimited:
			limited++
		}
	}
	if users < 5 || users > 6 || users+limited != 8 {
		t.Fatalf("%d answered, %d refused as rate limited", users, limited)
	}
}

// TestSlowClientIsDropped fills the queue of a client that never reads; it is dropped, its caller is told, and
// a third user's messages flow on meanwhile.
func TestSlowClientIsDropped(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.SendQueue, c.Rate = 256<<10, 0 })
	// The kernel's socket buffers take several MiB before the server's queue starts to fill: on a loaded machine
	// that takes longer than the other tests' 5 s.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	fast, slow, other := r.user("fast", nil), r.user("slow", nil), r.user("other", nil)
	if err := fast.SendOffer(ctx, "slow", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, fast); m.Type != protocol.TypeRinging {
		t.Fatalf("got %+v", m)
	}
	// slow answers (before that, the hub bounds what a caller may send: TestStrangerCannotFloodIdleUser).
	next(t, slow)
	if err := slow.SendAnswer(ctx, "fast", json.RawMessage(answerSDP)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, fast); m.Type != protocol.TypeAnswer {
		t.Fatalf("got %+v", m)
	}
	big := json.RawMessage(`{"candidate":"` + strings.Repeat("c", 60<<10) + `"}`)
	// slow reads nothing more. Send until the server gives up on it: fast then hears that slow has gone.
	stopSending, sent := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < 2000; i++ {
			select {
			case <-stopSending:
				return
			default:
			}
			if fast.SendCandidate(ctx, "slow", big) != nil {
				return
			}
		}
	}()
	m, err := fast.WaitFor(ctx, protocol.TypeLeave)
	close(stopSending)
	<-sent
	if err != nil || m.Name != "slow" || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("got %+v %v", m, err)
	}
	// other is undisturbed.
	if err := other.SendUsers(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	if m := next(t, other); m.Type != protocol.TypeUsers {
		t.Fatalf("got %+v", m)
	}
	body := r.get("/metrics")
	if !strings.Contains(body, "tandem_slow_clients_dropped_total 1") {
		t.Fatalf("metrics do not count the slow client")
	}
}

// TestVanishedClient is dropped by keepalive: its name is freed and its peer told.
func TestVanishedClient(t *testing.T) {
	t.Parallel()
	// a must answer pings within the idle timeout however loaded the machine: 1.5 s, not the 400 ms that flaked.
	r := startServer(t, func(c *server.Config) { c.PingInterval, c.IdleTimeout = 100*time.Millisecond, 1500*time.Millisecond })
	ctx := ctx5(t)
	a := r.user("a", nil)
	// b logs in, is called, and then stops answering anything (its client never reads, so never answers a
	// ping), as a phone that lost its network would.
	b := r.user("b", nil)
	if err := a.SendOffer(ctx, "b", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	// a keeps reading (so answers pings) and is not dropped; b is.
	m, err := a.WaitFor(ctx, protocol.TypeLeave)
	if err != nil || m.Name != "b" || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("got %+v %v", m, err)
	}
	r.user("b", nil)
	_ = b
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	a, b, idle := r.user("a", nil), r.user("b", nil), r.user("idle", nil)
	if err := a.SendOffer(ctx, "b", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	next(t, a)
	next(t, b)
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop() }()
	for _, u := range []*client.Client{a, b} {
		m, err := u.Read(ctx)
		if err != nil || m.Type != protocol.TypeLeave || m.Reason != protocol.ReasonShutdown {
			t.Fatalf("got %+v %v", m, err)
		}
	}
	for _, u := range []*client.Client{a, b, idle} {
		if _, err := u.Read(ctx); !errors.Is(err, client.ErrGoingAway) {
			t.Fatalf("got %v, want going away", err)
		}
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

func (r *running) get(path string) string {
	r.t.Helper()
	resp, err := http.Get(r.HTTP() + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return string(b)
}

func TestHTTPRoutes(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	if got := r.get("/healthz"); got != "ok\n" {
		t.Fatalf("/healthz: %q", got)
	}
	if page := r.get("/"); !strings.Contains(strings.ToLower(page), "<!doctype html>") {
		t.Fatalf("/ is not the web client")
	}
	resp, err := http.Get(r.HTTP() + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET /ws: %s", resp.Status)
	}
	// The WebSocket answers on /ws as on /.
	c, err := client.Dial(ctx, strings.TrimSuffix(r.URL, "/")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	a := r.user("alice", nil)
	if _, err := c.Login(ctx, "bob", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.SendOffer(ctx, "bob", json.RawMessage(offerSDP)); err != nil {
		t.Fatal(err)
	}
	next(t, c)
	next(t, a) // ringing
	send(t, a, `{"type":"nope"}`)
	expectError(t, a, protocol.CodeUnknownType)
	metrics := r.get("/metrics")
	for _, want := range []string{
		"tandem_connections 2",
		"tandem_users_online 2",
		`tandem_messages_relayed_total{type="offer"} 1`,
		`tandem_errors_total{code="unknown_type"} 1`,
		"tandem_slow_clients_dropped_total 0",
		"tandem_send_queue_bytes 0",
		"go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	_ = bytes.MinRead
}

// handshakeStatus sends c a WebSocket handshake with host and origin (none if empty) and returns the status code
// of the answer.
func handshakeStatus(t *testing.T, c net.Conn, host, origin string) int {
	t.Helper()
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("handshake with Host %s and Origin %s: %v", host, origin, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAllowedOrigins checks which pages may open the WebSocket when -allowed-origins is set: the listed ones, and
// tandem's own (judged by the names tandem serves and the port it listens on, never by the Host header the client
// chose), over the epoll loops' handshakes (plain mode) and net/http's (TLS mode).
func TestAllowedOrigins(t *testing.T) {
	t.Parallel()
	allowed := func(c *server.Config) {
		c.AllowedOrigins = []string{"https://call.example.org"}
		c.Hosts = []string{"mybox.local", "192.168.1.5", "*.lan.example"}
		c.PublicURL = "https://call.example.net/"
	}
	plain := startServer(t, allowed)
	secure := startTLSServer(t, allowed)
	for _, mode := range []struct {
		name, scheme, addr string
		dial               func(t *testing.T) net.Conn
	}{
		{"plain", "http", plain.Addr, func(t *testing.T) net.Conn { return dialTCP(t, plain.Addr) }},
		{"TLS", "https", secure.Addr, secure.dialTLS},
	} {
		_, port, _ := net.SplitHostPort(mode.addr)
		other := "1" + port
		if len(other) > 5 {
			other = "1"
		}
		for _, tt := range []struct {
			host, origin string
			ok           bool
		}{
			{mode.addr, "", true}, // a program, not a page
			{mode.addr, "https://call.example.org", true},
			{mode.addr, "https://CALL.example.org/", true},
			{mode.addr, "https://call.example.net", true}, // the public URL
			{"call.example.net", "https://call.example.net:443", true},
			{mode.addr, mode.scheme + "://" + mode.addr, true}, // tandem's own page, by address
			{"localhost:" + port, mode.scheme + "://localhost:" + port, true},
			{"[::1]:" + port, mode.scheme + "://[::1]:" + port, true},
			{"mybox.local:" + port, mode.scheme + "://mybox.local:" + port, true},
			{"192.168.1.5:" + port, mode.scheme + "://192.168.1.5:" + port, true},
			{"a.lan.example:" + port, mode.scheme + "://a.lan.example:" + port, true},
			{mode.addr, "https://evil.example.com", false},
			{mode.addr, "null", false}, // a file:// page
			// DNS rebinding: the page's own name, pointed at tandem, in the Host header too.
			{"evil.example:9090", "http://evil.example:9090", false},
			{"evil.example:" + port, mode.scheme + "://evil.example:" + port, false},
			{"evil.example:" + port, "https://evil.example", false},
			// tandem's names, but another port or scheme: another page.
			{"localhost:" + other, mode.scheme + "://localhost:" + other, false},
			{"mybox.local:" + port, map[string]string{"http": "https", "https": "http"}[mode.scheme] + "://mybox.local:" + port, false},
			{"a.b.lan.example:" + port, mode.scheme + "://a.b.lan.example:" + port, false},
			{"call.example.net:" + port, "http://call.example.net", false},
		} {
			got := handshakeStatus(t, mode.dial(t), tt.host, tt.origin)
			want := http.StatusForbidden
			if tt.ok {
				want = http.StatusSwitchingProtocols
			}
			if got != want {
				t.Errorf("%s: Host %s, Origin %q: %d, want %d", mode.name, tt.host, tt.origin, got, want)
			}
		}
	}
}
