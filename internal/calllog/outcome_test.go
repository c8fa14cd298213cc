package calllog_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

var fakeOffer = json.RawMessage(`{"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`)
var fakeAnswer = json.RawMessage(`{"type":"answer","sdp":"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`)

// ring makes caller offer to callee and waits until callee has the offer.
func ring(ctx context.Context, t *testing.T, caller, callee *client.Client, calleeName string) {
	t.Helper()
	if err := caller.SendOffer(ctx, calleeName, fakeOffer); err != nil {
		t.Fatal(err)
	}
	if m, err := callee.WaitFor(ctx, protocol.TypeOffer); err != nil || m.Type != protocol.TypeOffer {
		t.Fatalf("the offer did not reach %s: %+v, %v", calleeName, m, err)
	}
}

// TestOutcomes plays each way a call can end with plain clients (as the tutorial's client and tandem's do it),
// and checks the outcome the "call ended" line gives it, who ended it, and tandem_calls_total.
func TestOutcomes(t *testing.T) {
	srv, logs := start(t, func(c *server.Config) { c.ShutdownTimeout = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login := func(name string) *client.Client { return servertest.Login(t, ctx, srv.URL, name, nil) }

	type result struct {
		outcome, reason, by string
		setUp               bool // answered: the line has setup_ms and duration_s, else rang_s
	}
	want := map[string]result{} // by caller
	play := func(name string, r result, f func(caller, callee *client.Client)) {
		caller, callee := login(name+"-caller"), login(name+"-callee")
		f(caller, callee)
		want[name+"-caller"] = r
	}
	play("declined", result{"declined", "declined", "callee", false}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "declined-callee")
		_ = b.SendLeave(ctx, "declined-caller", protocol.ReasonDeclined)
	})
	play("tutorial-decline", result{"declined", "hangup", "callee", false}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "tutorial-decline-callee")
		_ = b.SendLeave(ctx, "tutorial-decline-caller", "")
	})
	play("cancelled", result{"cancelled", "cancelled", "caller", false}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "cancelled-callee")
		_ = a.SendLeave(ctx, "cancelled-callee", protocol.ReasonCancelled)
	})
	play("no-answer", result{"no_answer", "no_answer", "caller", false}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "no-answer-callee")
		_ = a.SendLeave(ctx, "no-answer-callee", protocol.ReasonNoAnswer)
	})
	play("caller-gone", result{"cancelled", "disconnected", "caller", false}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "caller-gone-callee")
		_ = a.CloseNow()
	})
	play("callee-gone", result{"failed", "disconnected", "callee", false}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "callee-gone-callee")
		_ = b.CloseNow()
	})
	play("answered", result{"answered", "hangup", "callee", true}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "answered-callee")
		_ = b.SendAnswer(ctx, "answered-caller", fakeAnswer)
		if _, err := a.WaitFor(ctx, protocol.TypeAnswer); err != nil {
			t.Fatal(err)
		}
		_ = b.SendLeave(ctx, "answered-caller", protocol.ReasonHangup)
	})
	play("ice-failed", result{"failed", "hangup", "caller", true}, func(a, b *client.Client) {
		ring(ctx, t, a, b, "ice-failed-callee")
		_ = b.SendAnswer(ctx, "ice-failed-caller", fakeAnswer)
		if _, err := a.WaitFor(ctx, protocol.TypeAnswer); err != nil {
			t.Fatal(err)
		}
		sendQuality(ctx, t, a, "ice-failed-callee", map[string]any{"phase": "failed", "iceMs": 30000})
		_ = a.SendLeave(ctx, "ice-failed-callee", protocol.ReasonHangup)
	})
	play("busy", result{"busy", "", "", false}, func(a, b *client.Client) {
		other := login("busy-other")
		ring(ctx, t, other, b, "busy-callee")
		if err := a.SendOffer(ctx, "busy-callee", fakeOffer); err != nil {
			t.Fatal(err)
		}
		if m, err := a.WaitFor(ctx, protocol.TypeOffer); err != nil || m.Code != protocol.CodeBusy {
			t.Fatalf("the offer to a user in a call: %+v, %v", m, err)
		}
	})

	check := func(l map[string]any, r result) {
		t.Helper()
		_, setUp := l["duration_s"]
		got := result{l["outcome"].(string), str(l["reason"]), str(l["by"]), setUp}
		if got != r {
			t.Errorf("%s's call: %+v, want %+v", l["caller"], got, r)
		}
		if id, _ := l["call"].(string); len(id) != 16 || l["node"] != "node-a" || l["kind"] != "person" || l["level"] != "INFO" {
			t.Errorf("%s's call: %v", l["caller"], l)
		}
		_, setUpMs := l["setup_ms"]
		_, rang := l["rang_s"]
		if setUpMs != r.setUp || rang != (!r.setUp && r.outcome != "busy") {
			t.Errorf("%s's call: setup_ms and rang_s: %v", l["caller"], l)
		}
	}
	for _, l := range logs.waitLines(t, "call ended", len(want)) {
		r, ok := want[str(l["caller"])]
		if !ok {
			t.Fatalf("a line for a call not made: %v", l)
		}
		check(l, r)
		delete(want, str(l["caller"]))
	}
	if n := len(logs.lines(t, "call set up")); n != 2 {
		t.Errorf("%d calls set up, want 2 (answered, ice-failed)", n)
	}
	m := servertest.Metrics(t, srv.HTTP()+"/metrics")
	for outcome, n := range map[string]float64{"answered": 1, "declined": 2, "cancelled": 2, "no_answer": 1, "failed": 2, "busy": 1} {
		if got := m[`tandem_calls_total{kind="person",outcome="`+outcome+`"}`]; got != n {
			t.Errorf("tandem_calls_total{outcome=%q} = %v, want %v", outcome, got, n)
		}
	}
	if got := m[`tandem_calls_active{kind="person"}`]; got != 1 {
		t.Errorf("tandem_calls_active = %v, want 1 (busy-other's call still rings)", got)
	}

	// The server stops: the call still ringing ends, and its line says so.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := logs.waitLines(t, "call ended", 10)
	check(lines[9], result{"failed", "shutdown", "server", false})
	if lines[9]["caller"] != "busy-other" {
		t.Errorf("the last line is not busy-other's call: %v", lines[9])
	}
}

func str(v any) string { s, _ := v.(string); return s }

// TestHashedNames: with names hashed, the log holds no name, and a user's hash is the same in each of its calls.
func TestHashedNames(t *testing.T) {
	srv, logs := start(t, func(c *server.Config) { c.CallLogNames = "hash" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := servertest.Login(t, ctx, srv.URL, "alice", nil)
	bob := servertest.Login(t, ctx, srv.URL, "bob", nil)
	carol := servertest.Login(t, ctx, srv.URL, "carol", nil)
	ring(ctx, t, alice, bob, "bob")
	_ = alice.SendLeave(ctx, "bob", protocol.ReasonCancelled)
	ring(ctx, t, alice, carol, "carol")
	_ = alice.SendLeave(ctx, "carol", protocol.ReasonCancelled)
	lines := logs.waitLines(t, "call ended", 2)
	if lines[0]["caller"] != lines[1]["caller"] || lines[0]["callee"] == lines[1]["callee"] ||
		!strings.HasPrefix(str(lines[0]["caller"]), "h:") || len(str(lines[0]["caller"])) != 14 {
		t.Errorf("hashed names: %v\n%v", lines[0], lines[1])
	}
	for _, name := range []string{"alice", "bob", "carol"} {
		if strings.Contains(logs.String(), name) {
			t.Errorf("the log holds %q:\n%s", name, logs.String())
		}
	}
	if _, err := server.New(func() server.Config { c := server.DefaultConfig(); c.CallLogNames = "md5"; return c }(), nil); err == nil {
		t.Error("a server with CallLogNames md5 was made")
	}
}
