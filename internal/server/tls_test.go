package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/certs"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/internal/turnserver"
	"tandem/protocol"
)

// TestSignalingOverTLS serves tandem over HTTPS with a generated self-signed certificate and the built-in TURN
// server on 127.0.0.1, and completes a signaling exchange over wss: two logins whose replies carry TURN
// credentials, and an offer relayed. A plain HTTP request on the same port is redirected to https.
func TestSignalingOverTLS(t *testing.T) {
	self, err := certs.LoadOrCreateSelfSigned(t.TempDir(), certs.Hosts{
		Names: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	var turn *turnserver.Server
	cfg := server.DefaultConfig()
	cfg.TLS = self.TLSConfig()
	cfg.ICEServers = func(name, host, session string) []protocol.ICEServer { return turn.ICEServers(name, host, session) }
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	turn, err = turnserver.New(turnserver.Config{
		ListenAddr: "127.0.0.1:0", Secret: "a test secret of some length", Registerer: srv.Registry(), Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := turn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turn.Close() }) // after the server has stopped (cleanups run last first)
	addr := servertest.Serve(t, srv, nil).Addr
	ctx := context.Background()

	pool := x509.NewCertPool()
	pool.AddCert(self.Certificate.Leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	httpc := &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	dial := func(name string) *client.Client {
		t.Helper()
		c, err := client.Dial(wctx, "wss://"+addr+"/", &client.Options{HTTPClient: httpc})
		if err != nil {
			t.Fatalf("dial wss: %v", err)
		}
		reply, err := c.Login(wctx, name, "")
		if err != nil || !reply.Success {
			t.Fatalf("login %s: %+v, %v", name, reply, err)
		}
		checkICEServers(t, reply.ICEServers, name, turn.Port())
		return c
	}
	alice, bob := dial("alice"), dial("bob")
	defer alice.CloseNow()
	defer bob.CloseNow()

	offer := json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)
	if err := alice.SendOffer(wctx, "bob", offer); err != nil {
		t.Fatal(err)
	}
	m, err := bob.WaitFor(wctx, protocol.TypeOffer)
	if err != nil {
		t.Fatalf("bob waiting for the offer: %v", err)
	}
	if m.Name != "alice" || string(m.Offer) != string(offer) {
		t.Errorf("bob got an offer from %q: %s", m.Name, m.Offer)
	}
	if _, err := alice.WaitFor(wctx, protocol.TypeRinging); err != nil {
		t.Errorf("alice waiting for ringing: %v", err)
	}

	// Plain HTTP on the TLS port is sent to https.
	resp, err := httpc.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "https://"+addr+"/" {
		t.Errorf("plain HTTP: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A client that does not trust the certificate gets no WebSocket.
	if c, err := client.Dial(wctx, "wss://"+addr+"/", nil); err == nil {
		_ = c.CloseNow()
		t.Error("a client that does not trust the certificate connected")
	}
}

// checkICEServers checks a login reply's ICE servers: the built-in STUN and TURN servers, on the host the client
// used, with a credential for the user.
func checkICEServers(t *testing.T, servers []protocol.ICEServer, user string, turnPort int) {
	t.Helper()
	hp := "127.0.0.1:" + strconv.Itoa(turnPort)
	if len(servers) != 2 || len(servers[0].URLs) != 1 || servers[0].URLs[0] != "stun:"+hp {
		t.Fatalf("ICE servers %+v, want stun:%s first", servers, hp)
	}
	turn := servers[1]
	if strings.Join(turn.URLs, " ") != "turn:"+hp+"?transport=udp turn:"+hp+"?transport=tcp" {
		t.Errorf("TURN URLs %v", turn.URLs)
	}
	if !strings.HasSuffix(turn.Username, ":"+user) || turn.Credential == "" {
		t.Errorf("TURN credential %q / %q, want one for %s", turn.Username, turn.Credential, user)
	}
}
