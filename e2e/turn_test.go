package e2e

import (
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/server"
	"tandem/internal/turnserver"
	"tandem/protocol"
)

// forceRelayJS makes every RTCPeerConnection of the page use TURN relays only (iceTransportPolicy "relay"), and
// logs ICE candidate errors, the only sign of a refused TURN credential.
const forceRelayJS = `(() => {
	const Native = window.RTCPeerConnection;
	window.RTCPeerConnection = class extends Native {
		constructor(config, ...rest) {
			super({ ...(config || {}), iceTransportPolicy: 'relay' }, ...rest);
			this.addEventListener('icecandidateerror', (e) => console.log('icecandidateerror', e.errorCode, e.errorText, e.url));
		}
	};
})()`

// selectedPairJS reads the candidate types of the selected candidate pair of tandem.pc.
const selectedPairJS = `(async () => {
	const pc = tandem.pc;
	if (!pc) return { local: '', remote: '' };
	const stats = await pc.getStats();
	let pair = null;
	stats.forEach((s) => {
		if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
	});
	if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
	if (!pair) return { local: '', remote: '' };
	return { local: stats.get(pair.localCandidateId).candidateType, remote: stats.get(pair.remoteCandidateId).candidateType };
})()`

type candidatePair struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

// startTandemWithTURN is startTandem with the built-in TURN server on 127.0.0.1, its default peer policy (no
// loopback allowance: the browsers' relays reach each other as the server's own relay addresses), and its
// credentials in the login reply.
func startTandemWithTURN(t *testing.T) (*tandem, *prometheus.Registry) {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var turn *turnserver.Server
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.ICEServers = func(user, host, session string) []protocol.ICEServer { return turn.ICEServers(user, host, session) }
	cfg.SessionEnded = func(session string) { turn.EndSession(session) }
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	turn, err = turnserver.New(turnserver.Config{
		ListenAddr: "127.0.0.1:0",
		Secret:     "e2e-turn-secret-0123456789",
		Registerer: srv.Registry(),
		Logger:     logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := turn.Start(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	tn := &tandem{t: t, cfg: cfg, addr: addr, url: "http://" + addr, wsURL: "ws://" + addr + "/ws", logs: logs}
	tn.run(srv, ln)
	t.Cleanup(func() {
		tn.stop()
		if err := turn.Close(); err != nil {
			t.Errorf("closing TURN: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return tn, srv.Registry()
}

// TestCallThroughTURN forces both browsers to relay through the built-in TURN server and checks that media flows
// both ways through it: the selected candidate pair is relay on both ends, and video frames are decoded.
func TestCallThroughTURN(t *testing.T) {
	requireBrowser(t)
	srv, reg := startTandemWithTURN(t)
	alice := openTandem(t, srv, "alice", "", withScript(forceRelayJS))
	bob := openTandem(t, srv, "bob", "", withScript(forceRelayJS))
	connect(t, alice, bob)
	for _, p := range []*page{alice, bob} {
		p.waitFor("a selected candidate pair", fmt.Sprintf(`(async () => (await %s).local !== '')()`, selectedPairJS))
		got := value[candidatePair](p, selectedPairJS)
		t.Logf("%s: selected candidate pair %s/%s", p.label, got.Local, got.Remote)
		if got.Local != "relay" || got.Remote != "relay" {
			t.Errorf("%s: selected candidate pair %s/%s, want relay/relay", p.label, got.Local, got.Remote)
		}
	}
	if n := gathered(t, reg, "tandem_turn_allocations"); n < 2 {
		t.Errorf("%v TURN allocations during the call, want at least 2", n)
	}
	n := gathered(t, reg, "tandem_turn_relayed_bytes_total")
	t.Logf("%.0f bytes relayed", n)
	if n < 10000 {
		t.Errorf("%v bytes relayed, want media", n)
	}
}

// gathered sums the values of a metric in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}
