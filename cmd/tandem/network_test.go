package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/certs"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader in two goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startRun runs tandem with args and env until the test ends, and returns what it printed once it printed a line
// matching ready.
func startRun(t *testing.T, args []string, env map[string]string, ready string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, out, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), ready) {
		select {
		case err := <-done:
			t.Fatalf("run ended: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tandem did not print %q; it printed:\n%s", ready, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out.String()
}

// TestLANMode runs tandem as docs/networks.md says for a LAN (with loopback addresses and free ports), opens the
// printed localhost URL with a client that trusts the certificate kept in the data directory, logs in over wss
// and gets TURN credentials; a restart keeps the certificate.
func TestLANMode(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"TANDEM_TLS_SELF_SIGNED": "true", "TANDEM_DATA_DIR": dir}
	args := []string{"-addr", "127.0.0.1:0", "-turn-addr", "127.0.0.1:0", "-turn-tls-port", "0", "-log-level", "error"}
	out := startRun(t, args, env, "TURN over TLS on the HTTPS port")

	m := regexp.MustCompile(`https://localhost:(\d+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no localhost URL in:\n%s", out)
	}
	fingerprint := regexp.MustCompile(`fingerprint ([0-9A-F:]+)`).FindString(out)
	pemBytes, err := os.ReadFile(filepath.Join(dir, "tls", "selfsigned-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the certificate file holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	httpc := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	resp, err := httpc.Get("https://localhost:" + m[1] + "/healthz")
	if err != nil {
		t.Fatalf("GET over https: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "wss://localhost:"+m[1]+"/ws", &client.Options{HTTPClient: httpc})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	defer c.CloseNow()
	reply, err := c.Login(ctx, "alice", "")
	if err != nil || !reply.Success {
		t.Fatalf("login: %+v, %v", reply, err)
	}
	var turnURLs []string
	for _, s := range reply.ICEServers {
		if s.Credential != "" {
			turnURLs = append(turnURLs, s.URLs...)
		}
	}
	turns := "turns:127.0.0.1:" + m[1] + "?transport=tcp" // the HTTPS port, shared
	if len(turnURLs) != 3 || !strings.HasPrefix(turnURLs[0], "turn:127.0.0.1:") || turnURLs[2] != turns {
		t.Errorf("TURN URLs in the login reply: %v, want turn: over UDP and TCP, and %s", turnURLs, turns)
	}
	_ = c.Close()

	secret, err := os.ReadFile(filepath.Join(dir, "turn-secret"))
	if err != nil || len(secret) < 16 {
		t.Errorf("no TURN secret kept in the data directory: %v", err)
	}

	// A second tandem on the same data directory serves the same certificate.
	again := startRun(t, args, env, "TURN over TLS on the HTTPS port")
	if got := regexp.MustCompile(`fingerprint ([0-9A-F:]+)`).FindString(again); got != fingerprint || got == "" {
		t.Errorf("after a restart: %q, want the same certificate %q", got, fingerprint)
	}
}

// TestACMEMode starts tandem with -acme-domain and -http-redirect, without asking any certificate authority (that
// happens on the first TLS handshake for the domain): the plain-HTTP listener redirects to https on tandem's port
// and answers unknown ACME challenges with 404.
func TestACMEMode(t *testing.T) {
	args := []string{"-addr", "127.0.0.1:0", "-acme-domain", "call.example.com", "-http-redirect", "127.0.0.1:0",
		"-turn-addr", "off", "-data-dir", t.TempDir(), "-log-level", "error"}
	out := startRun(t, args, nil, "redirects to https")
	m := regexp.MustCompile(`open https://call\.example\.com:(\d+)/`).FindStringSubmatch(out)
	r := regexp.MustCompile(`plain HTTP on (\S+) answers`).FindStringSubmatch(out)
	if m == nil || r == nil {
		t.Fatalf("unexpected output:\n%s", out)
	}
	httpc := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, _ := http.NewRequest("GET", "http://"+r[1]+"/call?x=1", nil)
	req.Host = "call.example.com"
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://call.example.com:" + m[1] + "/call?x=1"; resp.StatusCode/100 != 3 || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %d to %q, want %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	req, _ = http.NewRequest("GET", "http://"+r[1]+"/.well-known/acme-challenge/nothing", nil)
	req.Host = "call.example.com"
	if resp, err = httpc.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown challenge: %d, want 404", resp.StatusCode)
	}
}

func TestTURNOff(t *testing.T) {
	args := []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-data-dir", t.TempDir(), "-log-level", "error"}
	out := startRun(t, args, nil, "tandem: open http://")
	if strings.Contains(out, "TURN") {
		t.Errorf("TURN is off but tandem printed:\n%s", out)
	}
}

func TestNetworkFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-tls-cert", "cert.pem"},
		{"-tls-cert", filepath.Join(dir, "missing.pem"), "-tls-key", filepath.Join(dir, "missing-key.pem")},
		{"-tls-self-signed", "-acme-domain", "call.example.com"},
		{"-http-redirect", "127.0.0.1:0"},
		{"-acme-domain", "localhost"},
		{"-turn-relay-ports", "50000-"},
		{"-turn-relay-ports", "50010-50000"},
		{"-turn-public-ip", "not-an-ip"},
		{"-turn-allow-peers", "10.0.0.0"},
		{"-turn-external", "http://example.com"},
		{"-turn-secret", "short"},
		{"-turn-addr", "example.com:3478"},
		{"-turn-max-relay-share", "0"},
		{"-turn-max-relay-share", "101"},
		{"-turn-max-allocations-per-session", "0"},
		{"-turn-max-tcp-conns-per-address", "-2"},
		{"-turn-tcp-idle-timeout", "0s"},
		{"-tls-self-signed", "-turn-tls-port", "-1"},
		{"-tls-self-signed", "-turn-tls-port", "65536"},
	} {
		args = append([]string{"-addr", "127.0.0.1:0", "-data-dir", dir, "-turn-addr", "127.0.0.1:0"}, args...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := run(ctx, args, func(string) string { return "" }, io.Discard, io.Discard)
		cancel()
		if err == nil {
			t.Errorf("run %v succeeded", args)
		}
	}
}

// TestRedirectListenerUnfinishedRequest sends the -http-redirect listener a request that declares a body and never
// sends it: the connection is closed within the documented 10 s.
func TestRedirectListenerUnfinishedRequest(t *testing.T) {
	t.Parallel()
	args := []string{"-addr", "127.0.0.1:0", "-tls-self-signed", "-http-redirect", "127.0.0.1:0",
		"-turn-addr", "off", "-data-dir", t.TempDir(), "-log-level", "error"}
	out := startRun(t, args, nil, "redirects to https")
	r := regexp.MustCompile(`plain HTTP on (\S+) answers`).FindStringSubmatch(out)
	if r == nil {
		t.Fatalf("unexpected output:\n%s", out)
	}
	c, err := net.Dial("tcp", r[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	const limit = 12 * time.Second // 10 s and some slack
	_ = c.SetReadDeadline(start.Add(limit))
	if _, err := io.Copy(io.Discard, c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection is still open %v after the request started", limit)
		}
	}
}

// TestOwnOriginsWithAllowedOrigins runs tandem with -allowed-origins in each mode of README.md and
// docs/networks.md and opens the WebSocket as tandem's own page does, from each address tandem prints (and, with
// a certificate, each name it is for), over a connection to 127.0.0.1; a page elsewhere, on a name of its own
// pointed at tandem (DNS rebinding), is refused with 403.
func TestOwnOriginsWithAllowedOrigins(t *testing.T) {
	t.Parallel()
	certDir := t.TempDir()
	files, err := certs.LoadOrCreateSelfSigned(certDir, certs.Hosts{
		Names: []string{"call.example.test"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name  string
		args  []string
		extra []string // origins (with PORT for the port) tandem does not print but serves
	}{
		{"localhost", nil, nil},
		{"LAN", []string{"-tls-self-signed"}, nil},
		{"certificate files", []string{"-tls-cert", files.CertFile, "-tls-key", files.KeyFile}, []string{"https://call.example.test:PORT"}},
		{"public URL", []string{"-public-url", "https://call.example.test/"}, []string{"https://call.example.test"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := append([]string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-data-dir", dir, "-log-level", "error",
				"-allowed-origins", "https://friend.example.test"}, mode.args...)
			out := startRun(t, args, nil, "tandem: open")
			urls := regexp.MustCompile(`(https?)://(\S+?):(\d+)/`).FindAllStringSubmatch(out, -1)
			if len(urls) == 0 {
				t.Fatalf("no URL printed:\n%s", out)
			}
			scheme, port := urls[0][1], urls[0][3]
			httpc := http.DefaultClient
			if scheme == "https" {
				pemFile := files.CertFile
				if mode.name == "LAN" {
					pemFile = filepath.Join(dir, "tls", "selfsigned-cert.pem")
				}
				pemBytes, err := os.ReadFile(pemFile)
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pemBytes)
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
				defer tr.CloseIdleConnections()
				httpc = &http.Client{Transport: tr}
			}
			wsURL := strings.Replace(scheme, "http", "ws", 1) + "://127.0.0.1:" + port + "/"
			dial := func(origin string) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := client.Dial(ctx, wsURL, &client.Options{HTTPClient: httpc, Header: http.Header{"Origin": {origin}}})
				if err == nil {
					_ = c.CloseNow()
				}
				return err
			}
			own := mode.extra
			for _, u := range urls {
				own = append(own, u[1]+"://"+u[2]+":"+u[3])
			}
			for _, o := range append(own, "https://friend.example.test") {
				if err := dial(strings.ReplaceAll(o, "PORT", port)); err != nil {
					t.Errorf("origin %s: %v", o, err)
				}
			}
			for _, o := range []string{scheme + "://evil.example.test:" + port, "https://evil.example.test", "null"} {
				if err := dial(o); err == nil || !strings.Contains(err.Error(), "403") {
					t.Errorf("origin %s: %v, want a 403", o, err)
				}
			}
		})
	}
}

// TestOwnHostsACME checks the names an ACME-mode tandem takes for its own (its domains), without asking any
// certificate authority.
func TestOwnHostsACME(t *testing.T) {
	n, err := newNetwork(&netOptions{acmeDomains: "call.example.com, meet.example.com", dataDir: t.TempDir(), turnAddr: "off"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(n.ownHosts(":443"), " "); got != "call.example.com meet.example.com" {
		t.Errorf("own hosts %q", got)
	}
}
