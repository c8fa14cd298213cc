package calllog_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tandem/client"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuffer collects a JSON log, safe for the server writing and the test reading.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// lines returns the log lines whose msg is msg, decoded.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("a log line that is not JSON: %q", sc.Text())
		}
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// waitLines waits until n lines with msg are in the log (the call log is written by its own goroutine), and
// returns them.
func (b *logBuffer) waitLines(t *testing.T, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls := b.lines(t, msg)
		if len(ls) >= n || time.Now().After(deadline) {
			if len(ls) != n {
				t.Fatalf("%d %q lines, want %d; the log:\n%s", len(ls), msg, n, b.String())
			}
			return ls
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// start runs a server that logs JSON at info level into the returned buffer, as node "node-a".
func start(t *testing.T, change func(*server.Config)) (*servertest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.StartOn(t, ln, func(c *server.Config) {
		c.Node = "node-a"
		if change != nil {
			change(c)
		}
	}, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	return srv, logs
}

// sync waits until the server has handled everything c sent before: it asks for the user list and reads up to
// the reply, returning what came before it (but ringing).
func sync_(ctx context.Context, t *testing.T, c *client.Client) []*client.Message {
	t.Helper()
	if err := c.SendUsers(ctx, "", 1); err != nil {
		t.Fatal(err)
	}
	var before []*client.Message
	for {
		m, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == protocol.TypeUsers {
			return before
		}
		if m.Type != protocol.TypeRinging {
			before = append(before, m)
		}
	}
}

// syncPeer is sync_ for a pion peer, whose own goroutine reads its connection. Refused candidates are left out:
// the peer trickles its first candidates as it makes its offer, and they may overtake it; so is ringing.
func syncPeer(ctx context.Context, t *testing.T, p *webrtctest.Peer) []*client.Message {
	t.Helper()
	if err := p.C.SendUsers(ctx, "", 1); err != nil {
		t.Fatal(err)
	}
	var before []*client.Message
	for {
		select {
		case m := <-p.Messages:
			if m.Type == protocol.TypeUsers {
				return before
			}
			if m.Request != protocol.TypeCandidate && m.Type != protocol.TypeRinging {
				before = append(before, m)
			}
		case <-ctx.Done():
			t.Fatalf("%s: no users reply", p.Name)
		}
	}
}

func sendQuality(ctx context.Context, t *testing.T, c *client.Client, peer string, q map[string]any) {
	t.Helper()
	if err := c.Send(ctx, map[string]any{"type": protocol.TypeQuality, "name": peer, "quality": q}); err != nil {
		t.Fatal(err)
	}
}

// TestRealCall: two pion peers call each other through a real server on loopback, report how the call connected
// as the web client does, and hang up. The log has one line when the call was set up and one when it ended, with
// the call id, the node, both names, the outcome, the set-up time and duration and what the clients reported, and
// nothing of the SDP or the candidates; /metrics counts the call.
func TestRealCall(t *testing.T) {
	srv, logs := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	alice, err := webrtctest.NewPeer(ctx, api, srv.URL, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := webrtctest.NewPeer(ctx, api, srv.URL, "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	began := time.Now()
	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*webrtctest.Peer{alice, bob} {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ice := time.Since(began)
	setUp := logs.waitLines(t, "call set up", 1)[0]

	sendQuality(ctx, t, alice.C, "bob", alice.QualityReport(protocol.QualityConnected, ice))
	sendQuality(ctx, t, bob.C, "alice", bob.QualityReport(protocol.QualityConnected, ice))
	for _, p := range []*webrtctest.Peer{alice, bob} {
		if got := syncPeer(ctx, t, p); len(got) != 0 {
			t.Fatalf("%s's report was answered: %+v", p.Name, got[0])
		}
	}
	sendQuality(ctx, t, alice.C, "bob", alice.QualityReport(protocol.QualityEnded, ice))
	// bob's own last report comes after the call ended, as it does when the other party hangs up (its figures are
	// taken before: pion's statistics are not to be read while the peer connection closes).
	bobsLast := bob.QualityReport(protocol.QualityEnded, ice)
	if err := alice.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	ended := logs.waitLines(t, "call ended", 1)[0]
	sendQuality(ctx, t, bob.C, "alice", bobsLast)
	if got := syncPeer(ctx, t, bob); len(got) != 1 || got[0].Type != protocol.TypeLeave {
		for _, m := range got {
			t.Logf("bob got %+v", m)
		}
		t.Fatal("want alice's leave only")
	}

	for _, l := range []map[string]any{setUp, ended} {
		for k, want := range map[string]any{"level": "INFO", "node": "node-a", "kind": "person", "caller": "alice", "callee": "bob"} {
			if l[k] != want {
				t.Errorf("%s: %s=%v, want %v", l["msg"], k, l[k], want)
			}
		}
		if id, _ := l["call"].(string); len(id) != 16 {
			t.Errorf("%s: call id %q", l["msg"], l["call"])
		}
		if ms, ok := l["setup_ms"].(float64); !ok || ms < 0 || ms > float64(ice.Milliseconds()) {
			t.Errorf("%s: setup_ms=%v, want from 0 to the %v the call took to connect", l["msg"], l["setup_ms"], ice)
		}
	}
	if setUp["call"] != ended["call"] {
		t.Errorf("call ids differ: %v, %v", setUp["call"], ended["call"])
	}
	for k, want := range map[string]any{"outcome": "answered", "reason": "hangup", "by": "caller", "path": "direct", "transport": "udp"} {
		if ended[k] != want {
			t.Errorf("call ended: %s=%v, want %v", k, ended[k], want)
		}
	}
	if d, ok := ended["duration_s"].(float64); !ok || d < 0 || d > time.Since(began).Seconds()+0.1 {
		t.Errorf("call ended: duration_s=%v", ended["duration_s"])
	}
	for _, k := range []string{"caller_ice_ms", "caller_rtt_ms", "callee_ice_ms"} {
		if _, ok := ended[k].(float64); !ok {
			t.Errorf("call ended: no %s in %v", k, ended)
		}
	}
	all := logs.String()
	if testing.Verbose() {
		t.Logf("the log:\n%s", all)
	}
	for _, secret := range []string{"v=0", "sdp", "candidate", "ice-ufrag", "fingerprint", "127.0.0.1 "} {
		if strings.Contains(all, secret) {
			t.Errorf("the log holds %q:\n%s", secret, all)
		}
	}

	m := servertest.Metrics(t, srv.HTTP()+"/metrics")
	for series, want := range map[string]float64{
		`tandem_calls_started_total{kind="person"}`:                                 1,
		`tandem_calls_active{kind="person"}`:                                        0,
		`tandem_calls_total{kind="person",outcome="answered"}`:                      1,
		`tandem_calls_total{kind="person",outcome="failed"}`:                        0,
		`tandem_call_setup_seconds_count{kind="person"}`:                            1,
		`tandem_call_duration_seconds_count{kind="person"}`:                         1,
		`tandem_call_ice_seconds_count{kind="person"}`:                              2,
		`tandem_calls_connected_total{kind="person",path="direct",transport="udp"}`: 1,
		`tandem_calls_connected_total{kind="person",path="relay",transport="udp"}`:  0,
		`tandem_call_quality_reports_total{phase="connected"}`:                      2,
		`tandem_call_quality_reports_total{phase="ended"}`:                          2,
		`tandem_call_rtt_seconds_count{kind="person"}`:                              4,
		`tandem_call_log_dropped_total`:                                             0,
		`tandem_messages_relayed_total{type="offer"}`:                               1,
		`tandem_errors_total{code="invalid_message"}`:                               0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
}
