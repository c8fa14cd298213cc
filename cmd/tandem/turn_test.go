package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"tandem/client"
	"tandem/protocol"
)

// turnCredential returns the TURN server address and credential of a login reply.
func turnCredential(t *testing.T, servers []protocol.ICEServer) (addr, username, password string) {
	t.Helper()
	for _, s := range servers {
		for _, u := range s.URLs {
			if rest, ok := strings.CutPrefix(u, "turn:"); ok && s.Credential != "" {
				addr, _, _ = strings.Cut(rest, "?")
				return addr, s.Username, s.Credential
			}
		}
	}
	t.Fatalf("no TURN server in %+v", servers)
	return "", "", ""
}

// tryAllocate makes a TURN allocation over UDP with a pion client, kept until the test ends.
func tryAllocate(t *testing.T, addr, username, password string) error {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Username: username, Password: password, Conn: conn,
		RTO: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { _ = relay.Close() })
	}
	return err
}

// TestTURNQuotaAcrossRename runs tandem with small TURN caps from its environment variables: a login gets its
// per-session quota of allocations, and renaming on the same connection (a new login) adds only what is left of
// the client address's quota.
func TestTURNQuotaAcrossRename(t *testing.T) {
	env := map[string]string{
		"TANDEM_TURN_MAX_ALLOCATIONS_PER_SESSION": "2",
		"TANDEM_TURN_MAX_ALLOCATIONS_PER_ADDRESS": "3",
	}
	args := []string{"-addr", "127.0.0.1:0", "-turn-addr", "127.0.0.1:0", "-echo=false", "-data-dir", t.TempDir(),
		"-log-level", "error"}
	out := startRun(t, args, env, "STUN/TURN on port")
	m := regexp.MustCompile(`open http://(\S+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no URL in:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+m[1]+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	allocations := func(name string) (granted int) {
		t.Helper()
		reply, err := c.Login(ctx, name, "")
		if err != nil || !reply.Success {
			t.Fatalf("login %s: %+v, %v", name, reply, err)
		}
		addr, user, pass := turnCredential(t, reply.ICEServers)
		for range 4 {
			if tryAllocate(t, addr, user, pass) != nil {
				break
			}
			granted++
		}
		return granted
	}
	if n := allocations("alice"); n != 2 {
		t.Errorf("alice got %d allocations, want the login's 2", n)
	}
	if n := allocations("bob"); n != 1 {
		t.Errorf("after renaming to bob: %d more allocations, want 1 (the address's 3 less alice's 2)", n)
	}
	if n := allocations("carol"); n != 0 {
		t.Errorf("after renaming to carol: %d more allocations, want none", n)
	}
}

// freeTCPPort returns a TCP port free on 127.0.0.1 a moment ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// allocateOverTLS makes a TURN allocation over TLS with a pion client that trusts pool, and relays a datagram from
// it to a peer and back.
func allocateOverTLS(t *testing.T, addr string, pool *x509.CertPool, username, password string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	stunConn := turn.NewSTUNConn(conn)
	t.Cleanup(func() { _ = stunConn.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Username: username, Password: password, Conn: stunConn,
		RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate over TLS at %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	buf := make([]byte, 100)
	for _, step := range []struct {
		from, to net.PacketConn
		toAddr   net.Addr
	}{{relay, peer, peer.LocalAddr()}, {peer, relay, relay.LocalAddr()}} {
		got := ""
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
			t.Fatalf("nothing relayed over TLS from %v to %v", step.from.LocalAddr(), step.toAddr)
		}
	}
}

// TestTURNOverTLSPorts runs tandem in LAN mode twice: with TURN over TLS on a port of its own only (the login
// reply lists it), and on the HTTPS port only (one port for everything); each time a pion client relays over
// TLS through the listed turns: URL, checking tandem's certificate.
func TestTURNOverTLSPorts(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		ready string
	}{
		{"own port", []string{"-turn-tls-port", strconv.Itoa(freeTCPPort(t)), "-turn-share-https=false"}, "TURN over TLS on port"},
		{"HTTPS port", []string{"-turn-tls-port", "0"}, "TURN over TLS on the HTTPS port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"-addr", "127.0.0.1:0", "-turn-addr", "127.0.0.1:0", "-tls-self-signed", "-echo=false",
				"-data-dir", dir, "-turn-allow-loopback", "-log-level", "error"}, tt.args...)
			out := startRun(t, args, nil, tt.ready)
			m := regexp.MustCompile(`https://localhost:(\d+)/`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no URL in:\n%s", out)
			}
			pemBytes, err := os.ReadFile(filepath.Join(dir, "tls", "selfsigned-cert.pem"))
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pemBytes)
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, "wss://127.0.0.1:"+m[1]+"/ws", &client.Options{HTTPClient: &http.Client{Transport: tr}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			reply, err := c.Login(ctx, "alice", "")
			if err != nil || !reply.Success {
				t.Fatalf("login: %+v, %v", reply, err)
			}
			var turnsURLs []string
			var user, pass string
			for _, s := range reply.ICEServers {
				for _, u := range s.URLs {
					if strings.HasPrefix(u, "turns:") {
						turnsURLs = append(turnsURLs, u)
						user, pass = s.Username, s.Credential
					}
				}
			}
			if len(turnsURLs) != 1 {
				t.Fatalf("turns: URLs %v, want one", turnsURLs)
			}
			addr := strings.TrimSuffix(strings.TrimPrefix(turnsURLs[0], "turns:"), "?transport=tcp")
			if tt.name == "HTTPS port" && addr != "127.0.0.1:"+m[1] {
				t.Errorf("turns: on %s, want the HTTPS port %s", addr, m[1])
			}
			allocateOverTLS(t, addr, pool, user, pass)
		})
	}
}
