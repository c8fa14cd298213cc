package echo_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"tandem/internal/echo"
	"tandem/internal/netaddr"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("ECHO_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// startServer runs a tandem server on 127.0.0.1 until the test ends and returns its WebSocket URL.
func startServer(t *testing.T) string {
	t.Helper()
	return servertest.StartOn(t, listen(t, "127.0.0.1:0"), withEcho, testLogger(t)).URL
}

func withEcho(c *server.Config) { c.EchoName = "echo" }

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startEcho runs an echo peer against url until the test ends, and returns it with its metrics registry.
func startEcho(t *testing.T, url string, limit time.Duration) (*echo.Echo, *prometheus.Registry) {
	t.Helper()
	return runEcho(t, echo.Config{URL: url, Limit: limit, Peers: allowLoopback, SettingEngine: webrtctest.LoopbackOnly})
}

// allowLoopback is the policy of tandem's -turn-allow-loopback: the tests' callers are on 127.0.0.1.
var allowLoopback = netaddr.NewPeerPolicy(true, nil, nil)

// runEcho runs an echo peer made with cfg (and a registry and the test logger), after prepare has been called
// with it, until the test ends, and returns it with its metrics registry once it has logged in.
func runEcho(t *testing.T, cfg echo.Config, prepare ...func(*echo.Echo)) (*echo.Echo, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer, cfg.Logger = reg, testLogger(t)
	e, err := echo.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range prepare {
		f(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = e.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			t.Errorf("Run: %v", runErr)
		}
		if n := gauge(t, reg, "tandem_echo_peer_connections"); n != 0 {
			t.Errorf("%v peer connections still open after Run returned", n)
		}
	})
	select {
	case <-e.LoggedIn():
	case <-done:
		t.Fatal("Run returned before logging in")
	case <-time.After(10 * time.Second):
		t.Fatal("the echo peer did not log in")
	}
	return e, reg
}

// gauge reads a metric's value from reg.
func gauge(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// expectEcho waits until n packets of each kind came back with the payload that was sent with their number.
func expectEcho(ctx context.Context, t *testing.T, p *webrtctest.Peer, n int) {
	t.Helper()
	got := map[string]int{}
	for got["audio"] < n || got["video"] < n {
		select {
		case pkt := <-p.Packets:
			rest, _ := strings.CutPrefix(string(pkt.Payload), "echo-")
			kind, _, ok := strings.Cut(rest, "-")
			if !ok || string(pkt.Payload) != webrtctest.NumberedPayload("echo", kind, pkt.SequenceNumber) {
				t.Fatalf("packet %d came back with payload %q", pkt.SequenceNumber, pkt.Payload)
			}
			got[kind]++
		case <-ctx.Done():
			t.Fatalf("only %v packets came back: %v", got, ctx.Err())
		}
	}
}

func TestEchoCall(t *testing.T) {
	url := startServer(t)
	startEcho(t, url, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	p := waitPeer(ctx, t, api, url, "alice")
	defer p.Close()
	if err := p.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mediaCtx, stopMedia := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { p.SendNumbered(mediaCtx, "echo") })
	defer wg.Wait()
	defer stopMedia()
	expectEcho(ctx, t, p, 50)

	// An ICE restart, as a browser does when its network changes: the echo peer answers on the same peer
	// connection, with new ICE credentials, and the media keeps coming back.
	first := <-p.Answers
	if err := p.Renegotiate(ctx, true); err != nil {
		t.Fatal(err)
	}
	select {
	case second := <-p.Answers:
		if iceUfrag(second.SDP) == "" || iceUfrag(second.SDP) == iceUfrag(first.SDP) {
			t.Errorf("the answer to an ICE restart has ice-ufrag %q, the first one had %q", iceUfrag(second.SDP), iceUfrag(first.SDP))
		}
	case <-ctx.Done():
		t.Fatal("no answer to the ICE restart")
	}
	for len(p.Packets) > 0 { // what came back before the restart
		<-p.Packets
	}
	expectEcho(ctx, t, p, 50)

	for _, text := range []string{"hello", "échö ✓"} {
		if err := p.SendChat(ctx, text); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-p.Chat:
			if got != text {
				t.Fatalf("chat came back as %q, want %q", got, text)
			}
		case <-ctx.Done():
			t.Fatal("no chat came back")
		}
	}
}

// waitPeer logs name in once the echo peer is there to call.
func waitPeer(ctx context.Context, t *testing.T, api *webrtc.API, url, name string) *webrtctest.Peer {
	t.Helper()
	p, err := webrtctest.NewPeer(ctx, api, url, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEchoTimeLimit(t *testing.T) {
	url := startServer(t)
	startEcho(t, url, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	p := waitPeer(ctx, t, api, url, "bob")
	defer p.Close()
	if err := p.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-p.Messages:
			if m.Type == protocol.TypeLeave {
				if m.Name != "echo" || m.Reason != protocol.ReasonHangup {
					t.Fatalf("leave %+v", m)
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("the echo peer did not hang up at its time limit")
		}
	}
}

// TestEchoManyCalls makes many calls, several at once, and checks that every peer connection is released: the
// gauge goes back to zero while the echo peer runs, and TestMain's goleak finds no goroutine left once it stops.
func TestEchoManyCalls(t *testing.T) {
	url := startServer(t)
	_, reg := startEcho(t, url, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	const rounds, parallel = 5, 4
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range parallel {
			wg.Go(func() {
				p, err := webrtctest.NewPeer(ctx, api, url, fmt.Sprintf("caller-%d-%d", round, i), nil)
				if err != nil {
					t.Error(err)
					return
				}
				defer p.Hangup(ctx)
				if err := p.Call(ctx, "echo"); err != nil {
					t.Error(err)
					return
				}
				if err := p.WaitConnected(ctx); err != nil {
					t.Error(err)
					return
				}
				mediaCtx, stop := context.WithCancel(ctx)
				var media sync.WaitGroup
				media.Go(func() { p.SendNumbered(mediaCtx, "echo") })
				expectEcho(ctx, t, p, 10)
				stop()
				media.Wait()
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	if n := gauge(t, reg, "tandem_echo_calls_total"); n != rounds*parallel {
		t.Errorf("tandem_echo_calls_total = %v, want %d", n, rounds*parallel)
	}
	waitGauge(ctx, t, reg, "tandem_echo_peer_connections", 0)
}

// waitGauge waits until the metric reads want: peer connections are released in the background.
func waitGauge(ctx context.Context, t *testing.T, reg prometheus.Gatherer, name string, want float64) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for gauge(t, reg, name) != want {
		select {
		case <-ctx.Done():
			t.Fatalf("%s = %v, want %v", name, gauge(t, reg, name), want)
		case <-tick.C:
		}
	}
}

// TestEchoReconnects: when the server restarts, the echo peer logs in again by itself.
func TestEchoReconnects(t *testing.T) {
	srv := servertest.StartOn(t, listen(t, "127.0.0.1:0"), withEcho, testLogger(t))
	addr, url := srv.Addr, srv.URL
	e, err := echo.New(echo.Config{URL: url, Logger: testLogger(t), Peers: allowLoopback, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(runCtx)
	}()
	defer func() { stopRun(); <-done }()
	<-e.LoggedIn()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	servertest.StartOn(t, listen(t, addr), withEcho, testLogger(t))

	c := servertest.Login(t, ctx, url, "alice", nil)
	for {
		if err := c.SendUsers(ctx, "echo", 1); err != nil {
			t.Fatal(err)
		}
		m, err := c.WaitFor(ctx, protocol.TypeUsers)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Users) == 1 && m.Users[0].Name == "echo" && m.Users[0].Echo {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the echo peer did not log in again")
		case <-time.After(20 * time.Millisecond): // its login is not an event this client can see
		}
	}
}

// iceUfrag returns the first a=ice-ufrag of an SDP.
func iceUfrag(sdp string) string {
	for line := range strings.SplitSeq(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}
