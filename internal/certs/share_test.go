package certs

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"tandem/internal/turnserver"
)

// serveShared serves h over TLS on one 127.0.0.1 port with NewListener, sharing it with a real TURN server, and
// returns the port's address and the TURN server.
func serveShared(t *testing.T, cfg *tls.Config, h http.Handler) (string, *turnserver.Server) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := raw.Addr().(*net.TCPAddr).Port
	ts, err := turnserver.New(turnserver.Config{
		ListenAddr: "127.0.0.1:0", Secret: "a test secret of some length", TLS: cfg, SharedTLSPort: port,
		AllowLoopback: true, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Start(); err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, cfg, ListenerConfig{TURN: ts.HandOff})
	srv := &http.Server{Handler: RedirectPlain(h), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
		_ = ts.Close()
	})
	return raw.Addr().String(), ts
}

// TestTURNSharesTheHTTPSPort serves HTTPS and TURN over TLS on one port: a pion TURN client over TLS (asking
// for no ALPN protocol, as browsers' TURN clients do, and asking for TURN's) gets a relay that carries data both
// ways, and HTTPS requests get pages, over TLS, whether or not they ask for an ALPN protocol.
func TestTURNSharesTheHTTPSPort(t *testing.T) {
	t.Parallel()
	s, err := LoadOrCreateSelfSigned(t.TempDir(), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr, ts := serveShared(t, s.TLSConfig(), hello)
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate.Leaf)

	for _, alpn := range [][]string{nil, {"stun.turn"}} {
		t.Run(fmt.Sprintf("TURN ALPN %v", alpn), func(t *testing.T) {
			user, pass := "", ""
			for _, srv := range ts.ICEServers("alice", addr, "login") {
				for _, u := range srv.URLs {
					if u == "turns:"+addr+"?transport=tcp" {
						user, pass = srv.Username, srv.Credential
					}
				}
			}
			if user == "" {
				t.Fatalf("no turns:%s URL in %+v", addr, ts.ICEServers("alice", addr, "login"))
			}
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: alpn})
			if err != nil {
				t.Fatal(err)
			}
			stun := turn.NewSTUNConn(conn)
			c, err := turn.NewClient(&turn.ClientConfig{
				STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass, Conn: stun, RTO: 200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stun.Close()
			defer c.Close()
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("Allocate on the HTTPS port: %v", err)
			}
			defer relay.Close()
			peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			exchange(t, relay, peer, peer.LocalAddr(), "to the peer")
			exchange(t, peer, relay, relay.LocalAddr(), "to the client")
		})
	}

	// A browser asks for h2 or http/1.1; a client that asks for no ALPN protocol is told apart by its first
	// bytes. Both are served over TLS (not redirected to https, where they already are).
	for _, alpn := range [][]string{{"h2", "http/1.1"}, nil} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: alpn})
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("HTTPS GET with ALPN %v: %v", alpn, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		conn.Close()
		want := "hello over " + conn.ConnectionState().NegotiatedProtocol
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("HTTPS GET with ALPN %v: %d %q, want 200 %q", alpn, resp.StatusCode, body, want)
		}
	}

	client := trustingClient(t, s.Certificate.Leaf, "127.0.0.1")
	// Plain HTTP on the port is still redirected.
	resp, err := client.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Errorf("plain HTTP: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// exchange sends msg from one socket to another until it arrives (the first may race a permission).
func exchange(t *testing.T, from, to net.PacketConn, toAddr net.Addr, msg string) {
	t.Helper()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := from.WriteTo([]byte(msg), toAddr); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		_ = to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := to.ReadFrom(buf)
		if err == nil && string(buf[:n]) == msg {
			return
		}
	}
	t.Fatalf("%q did not arrive", msg)
}
