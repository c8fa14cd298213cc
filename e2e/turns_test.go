package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/certs"
	"tandem/internal/server"
	"tandem/internal/turnserver"
	"tandem/protocol"
)

// onlyTURNSJS makes every RTCPeerConnection of the page relay only through the turns: URLs of its ICE servers
// (TURN over TLS): the other URLs are dropped and iceTransportPolicy is "relay". It logs ICE candidate errors, and
// keeps the URLs it used in window.turnsURLs.
const onlyTURNSJS = `(() => {
	const Native = window.RTCPeerConnection;
	window.turnsURLs = [];
	window.RTCPeerConnection = class extends Native {
		constructor(config, ...rest) {
			const iceServers = ((config && config.iceServers) || [])
				.map((s) => ({ ...s, urls: [].concat(s.urls || []).filter((u) => u.startsWith('turns:')) }))
				.filter((s) => s.urls.length > 0);
			window.turnsURLs = iceServers.flatMap((s) => s.urls);
			super({ ...(config || {}), iceServers, iceTransportPolicy: 'relay' }, ...rest);
			this.addEventListener('icecandidateerror', (e) => console.log('icecandidateerror', e.errorCode, e.errorText, e.url));
		}
	};
})()`

// selectedRelayJS describes the local candidate of tandem.pc's selected candidate pair: its type, and for a relay
// the protocol between the browser and the TURN server ("udp", "tcp" or "tls").
const selectedRelayJS = `(async () => {
	const pc = tandem.pc;
	if (!pc) return { type: '', relayProtocol: '', remoteType: '' };
	const stats = await pc.getStats();
	let pair = null;
	stats.forEach((s) => {
		if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
	});
	if (!pair) return { type: '', relayProtocol: '', remoteType: '' };
	const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
	return { type: local.candidateType, relayProtocol: local.relayProtocol || '', remoteType: remote.candidateType };
})()`

type selectedRelay struct {
	Type          string `json:"type"`
	RelayProtocol string `json:"relayProtocol"`
	RemoteType    string `json:"remoteType"`
}

// trustingBrowser starts a browser of its own for the test, like the shared one but trusting cert (by its public
// key, with --ignore-certificate-errors-spki-list): Chromium checks the certificate of a TURN server over TLS as it
// checks a web page's, and refuses a self-signed one ("unknown certificate"). It stops when the test ends.
func trustingBrowser(t *testing.T, cert *x509.Certificate) context.Context {
	t.Helper()
	requireBrowser(t)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	out := &syncBuffer{}
	opts := append(browserOptions(t.TempDir(), out),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(sum[:])))
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		allocCancel()
	})
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting a browser: %v\n%s", err, out.String())
	}
	return ctx
}

// startTandemWithTURNS is startTandemWithTURN with TURN over TLS, with a self-signed certificate for 127.0.0.1
// made as tandem's LAN mode makes it: on a port of its own (the page over plain HTTP), or, with shared, on the
// HTTPS port of the page itself (one port for everything).
func startTandemWithTURNS(t *testing.T, shared bool) (*tandem, *prometheus.Registry, *x509.Certificate) {
	t.Helper()
	self, err := certs.LoadOrCreateSelfSigned(t.TempDir(), certs.Hosts{
		Names: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var turn *turnserver.Server
	cfg := server.DefaultConfig()
	cfg.Addr = addr
	cfg.ICEServers = func(user, host, session string) []protocol.ICEServer { return turn.ICEServers(user, host, session) }
	cfg.SessionEnded = func(session string) { turn.EndSession(session) }
	tcfg := turnserver.Config{
		ListenAddr: "127.0.0.1:0",
		TLS:        self.TLSConfig(),
		Secret:     "e2e-turn-secret-0123456789",
		Logger:     logger,
	}
	url := "http://" + addr
	if shared {
		cfg.TLS = self.TLSConfig()
		cfg.TURNOverTLS = func(c net.Conn) { turn.HandOff(c) }
		tcfg.SharedTLSPort = ln.Addr().(*net.TCPAddr).Port
		url = "https://" + addr
	} else {
		tcfg.TLSAddr = ":0"
	}
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	tcfg.Registerer = srv.Registry()
	if turn, err = turnserver.New(tcfg); err != nil {
		t.Fatal(err)
	}
	if err := turn.Start(); err != nil {
		t.Fatal(err)
	}
	tn := &tandem{t: t, cfg: cfg, addr: addr, url: url, logs: logs}
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
	return tn, srv.Registry(), self.Certificate.Leaf
}

// TestCallThroughTURNOverTLS forces both browsers to relay through the built-in TURN server over TLS only (the
// turns: URL of the login reply, nothing else, iceTransportPolicy "relay"), as on a network that lets only TLS
// out: the call connects, media flows both ways, and the selected candidate pair is a relay reached over TLS.
// Once on TURN's own TLS port, once on the HTTPS port the page came from (the one-port deployment).
func TestCallThroughTURNOverTLS(t *testing.T) {
	requireBrowser(t)
	for _, shared := range []bool{false, true} {
		name := "own port"
		if shared {
			name = "HTTPS port"
		}
		t.Run(name, func(t *testing.T) {
			srv, reg, cert := startTandemWithTURNS(t, shared)
			b := trustingBrowser(t, cert)
			alice := openTandem(t, srv, "alice", "", withScript(onlyTURNSJS), inBrowser(b))
			bob := openTandem(t, srv, "bob", "", withScript(onlyTURNSJS), inBrowser(b))
			connect(t, alice, bob)
			for _, p := range []*page{alice, bob} {
				urls := value[[]string](p, `window.turnsURLs`)
				if len(urls) != 1 || !strings.HasPrefix(urls[0], "turns:127.0.0.1:") ||
					shared != (urls[0] == "turns:"+srv.addr+"?transport=tcp") {
					t.Errorf("%s: relayed through %v, want the one turns: URL (on the HTTPS port %s: %v)", p.label, urls, srv.addr, shared)
				}
				p.waitFor("a selected candidate pair", fmt.Sprintf(`(async () => (await %s).type !== '')()`, selectedRelayJS))
				got := value[selectedRelay](p, selectedRelayJS)
				t.Logf("%s: selected pair %s over %s / %s", p.label, got.Type, got.RelayProtocol, got.RemoteType)
				if got.Type != "relay" || got.RelayProtocol != "tls" || got.RemoteType != "relay" {
					t.Errorf("%s: selected pair %s (relay protocol %q) / %s, want relay over tls / relay", p.label, got.Type, got.RelayProtocol, got.RemoteType)
				}
			}
			if n := gathered(t, reg, "tandem_turn_tcp_connections"); n < 2 {
				t.Errorf("%v TLS connections to the TURN server during the call, want at least 2", n)
			}
			if n := gathered(t, reg, "tandem_turn_relayed_bytes_total"); n < 10000 {
				t.Errorf("%v bytes relayed, want media", n)
			}
		})
	}
}
