package calllog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/servertest"
	"tandem/protocol"
)

// refusal sends raw and returns the error it is answered with (nil when it is not answered).
func refusal(ctx context.Context, t *testing.T, c *client.Client, raw string) *client.Message {
	t.Helper()
	if err := c.Send(ctx, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	got := sync_(ctx, t, c)
	switch len(got) {
	case 0:
		return nil
	case 1:
		return got[0]
	}
	t.Fatalf("%s: answered %d times: %+v", raw, len(got), got)
	return nil
}

// TestQualityReports: a quality report is checked, bounded, never relayed and counted.
func TestQualityReports(t *testing.T) {
	srv, logs := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	good := `{"phase":"connected","path":"relay","transport":"tcp","iceMs":812,"rttMs":41.5,"lossPct":1.5}`

	stranger, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.CloseNow()
	if m := refusal(ctx, t, stranger, `{"type":"quality","name":"bob","quality":`+good+`}`); m == nil || m.Code != protocol.CodeNotLoggedIn {
		t.Errorf("before logging in: %+v", m)
	}

	alice := servertest.Login(t, ctx, srv.URL, "alice", nil)
	bob := servertest.Login(t, ctx, srv.URL, "bob", nil)
	if m := refusal(ctx, t, alice, `{"type":"quality","name":"bob","quality":`+good+`}`); m == nil || m.Code != protocol.CodeNotInCall {
		t.Errorf("before any call: %+v", m)
	}

	ring(ctx, t, alice, bob, "bob")
	_ = bob.SendAnswer(ctx, "alice", fakeAnswer)
	if _, err := alice.WaitFor(ctx, protocol.TypeAnswer); err != nil {
		t.Fatal(err)
	}

	// Malformed reports: each refused with invalid_message, naming what is wrong; none is counted.
	for _, c := range []struct{ raw, says string }{
		{`{"type":"quality","name":"bob"}`, `needs a "quality" object`},
		{`{"type":"quality","quality":` + good + `}`, `needs the "name"`},
		{`{"type":"quality","name":"bob","quality":"good"}`, `"quality" must be an object`},
		{`{"type":"quality","name":"bob","quality":[1]}`, `"quality" must be an object`},
		{`{"type":"quality","name":"bob","quality":{}}`, `"phase"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"great","path":"direct"}}`, `"phase"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected"}}`, `needs "path"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"p2p"}}`, `"path"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","transport":"sctp"}}`, `"transport"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","iceMs":-1}}`, `"iceMs"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","iceMs":"fast"}}`, `"iceMs"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","iceMs":1e300}}`, `"iceMs"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","rttMs":60001}}`, `"rttMs"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","lossPct":101}}`, `"lossPct"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"connected","path":"direct","lossPct":true}}`, `"lossPct"`},
		{`{"type":"quality","name":"bob","quality":{"phase":"ended","path":"direct","pad":"` + strings.Repeat("x", 500) + `"}}`, `at most 512 bytes`},
	} {
		m := refusal(ctx, t, alice, c.raw)
		if m == nil || m.Type != protocol.TypeError || m.Code != protocol.CodeInvalidMessage || m.Request != protocol.TypeQuality ||
			!strings.Contains(m.Message, c.says) {
			t.Errorf("%s: answered %+v, want invalid_message saying %s", c.raw, m, c.says)
		}
	}
	// A report about somebody else's call.
	if m := refusal(ctx, t, alice, `{"type":"quality","name":"carol","quality":`+good+`}`); m == nil || m.Code != protocol.CodeNotInCall || m.Name != "carol" {
		t.Errorf("about a call with carol: %+v", m)
	}

	// A good report is taken without an answer, and never reaches the other party: bob's next message is
	// alice's candidate, sent after it.
	if m := refusal(ctx, t, alice, `{"type":"quality","name":"bob","quality":`+good+`}`); m != nil {
		t.Errorf("a good report was answered: %+v", m)
	}
	_ = alice.SendCandidate(ctx, "bob", []byte(`{"candidate":"","sdpMid":"0","sdpMLineIndex":0}`))
	if m, err := bob.Read(ctx); err != nil || m.Type != protocol.TypeCandidate {
		t.Errorf("bob's next message: %+v, %v; want alice's candidate", m, err)
	}
	// Unknown fields are ignored, a null field is as if absent; a report may also follow the end of the call.
	_ = bob.SendLeave(ctx, "alice", protocol.ReasonHangup)
	if _, err := alice.WaitFor(ctx, protocol.TypeLeave); err != nil {
		t.Fatal(err)
	}
	if m := refusal(ctx, t, bob, `{"type":"quality","name":"alice","quality":{"phase":"ended","path":"relay","rttMs":null,"jitterMs":3}}`); m != nil {
		t.Errorf("bob's report after the call: %+v", m)
	}
	// Each party may report MaxReports times about a call; alice has sent 1.
	for i := 2; i <= 9; i++ {
		m := refusal(ctx, t, alice, `{"type":"quality","name":"bob","quality":{"phase":"ended","path":"relay"}}`)
		if i <= 8 && m != nil {
			t.Fatalf("report %d: %+v", i, m)
		}
		if i == 9 && (m == nil || m.Code != protocol.CodeRateLimited || m.Request != protocol.TypeQuality) {
			t.Errorf("report %d: %+v, want rate_limited", i, m)
		}
	}

	metrics := servertest.Metrics(t, srv.HTTP()+"/metrics")
	for series, want := range map[string]float64{
		`tandem_call_quality_reports_total{phase="connected"}`:                     1,
		`tandem_call_quality_reports_total{phase="ended"}`:                         8,
		`tandem_calls_connected_total{kind="person",path="relay",transport="tcp"}`: 1,
		`tandem_call_ice_seconds_count{kind="person"}`:                             1,
		`tandem_call_ice_seconds_sum{kind="person"}`:                               0.812,
		`tandem_call_rtt_seconds_count{kind="person"}`:                             1,
		`tandem_call_loss_ratio_sum{kind="person"}`:                                0.015,
		`tandem_errors_total{code="invalid_message"}`:                              16,
		`tandem_errors_total{code="not_in_call"}`:                                  2,
		`tandem_errors_total{code="rate_limited"}`:                                 1,
		`tandem_messages_relayed_total{type="candidate"}`:                          1,
	} {
		if got := metrics[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	l := logs.waitLines(t, "call ended", 1)[0]
	for k, want := range map[string]any{"path": "relay", "transport": "tcp", "caller_ice_ms": 812.0, "caller_rtt_ms": 41.0, "caller_loss_pct": 1.5} {
		if l[k] != want {
			t.Errorf("call ended: %s=%v, want %v", k, l[k], want)
		}
	}
}
