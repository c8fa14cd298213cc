package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v4"

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

// TestTURNOnTheHTTPSPort serves tandem over HTTPS with TURN over TLS on the same port (the one-port deployment):
// the login reply lists a turns: URL on the HTTPS port, a pion TURN client over TLS to that port gets a relay
// that carries data both ways, and the web client is served on the same port.
func TestTURNOnTheHTTPSPort(t *testing.T) {
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
	logger := slog.New(slog.DiscardHandler)
	var turnSrv *turnserver.Server
	cfg := server.DefaultConfig()
	cfg.TLS = self.TLSConfig()
	cfg.ICEServers = func(name, host, session string) []protocol.ICEServer { return turnSrv.ICEServers(name, host, session) }
	cfg.TURNOverTLS = func(c net.Conn) { turnSrv.HandOff(c) }
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	turnSrv, err = turnserver.New(turnserver.Config{
		ListenAddr: "127.0.0.1:0", Secret: "a test secret of some length", Registerer: srv.Registry(), Logger: logger,
		TLS: cfg.TLS, SharedTLSPort: ln.Addr().(*net.TCPAddr).Port, AllowLoopback: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := turnSrv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turnSrv.Close() })
	servertest.Serve(t, srv, ln)

	pool := x509.NewCertPool()
	pool.AddCert(self.Certificate.Leaf)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	tr := &http.Transport{TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	httpc := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "wss://"+addr+"/", &client.Options{HTTPClient: httpc})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	defer c.CloseNow()
	reply, err := c.Login(ctx, "alice", "")
	if err != nil || !reply.Success {
		t.Fatalf("login: %+v, %v", reply, err)
	}
	var user, pass string
	for _, s := range reply.ICEServers {
		for _, u := range s.URLs {
			if u == "turns:"+addr+"?transport=tcp" {
				user, pass = s.Username, s.Credential
			}
		}
	}
	if user == "" {
		t.Fatalf("the login reply lists no turns:%s URL: %+v", addr, reply.ICEServers)
	}

	conn, err := tls.Dial("tcp", addr, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	stunConn := pionturn.NewSTUNConn(conn)
	defer stunConn.Close()
	tc, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass, Conn: stunConn, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := tc.Allocate()
	if err != nil {
		t.Fatalf("Allocate on the HTTPS port: %v", err)
	}
	defer relay.Close()
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for _, step := range []struct {
		from, to net.PacketConn
		toAddr   net.Addr
	}{{relay, peer, peer.LocalAddr()}, {peer, relay, relay.LocalAddr()}} {
		got := ""
		buf := make([]byte, 100)
		for deadline := time.Now().Add(5 * time.Second); got != "media" && time.Now().Before(deadline); {
			if _, err := step.from.WriteTo([]byte("media"), step.toAddr); err != nil {
				t.Fatal(err)
			}
			_ = step.to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := step.to.ReadFrom(buf); err == nil {
				got = string(buf[:n])
			}
		}
		if got != "media" {
			t.Fatalf("nothing relayed from %v to %v", step.from.LocalAddr(), step.toAddr)
		}
	}

	resp, err := httpc.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("the web client on the shared port: %d", resp.StatusCode)
	}
}
