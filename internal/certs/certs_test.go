package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testHosts(extra ...string) Hosts {
	h := Hosts{Names: []string{"localhost", "mybox.local"}, IPs: []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("192.168.1.5"),
	}}
	for _, e := range extra {
		if ip, err := netip.ParseAddr(e); err == nil {
			h.IPs = append(h.IPs, ip)
		} else {
			h.Names = append(h.Names, e)
		}
	}
	return h
}

func TestSelfSignedLifecycle(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()

	first, err := LoadOrCreateSelfSigned(dir, testHosts(), now)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Created {
		t.Error("first call: Created = false")
	}
	leaf := first.Certificate.Leaf
	if leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", leaf.PublicKeyAlgorithm)
	}
	for _, h := range []string{"localhost", "mybox.local", "127.0.0.1", "::1", "192.168.1.5"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate not valid for %s: %v", h, err)
		}
	}
	if d := leaf.NotAfter.Sub(now); d > 398*24*time.Hour || d < 300*24*time.Hour {
		t.Errorf("valid for %v", d)
	}
	if fi, err := os.Stat(first.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	if fp := first.Fingerprint(); len(fp) != 32*3-1 || strings.Count(fp, ":") != 31 {
		t.Errorf("fingerprint %q", fp)
	}

	serial := func(s *SelfSigned) string { return s.Certificate.Leaf.SerialNumber.String() }
	again, err := LoadOrCreateSelfSigned(dir, testHosts(), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || serial(again) != serial(first) {
		t.Error("a valid certificate on disk was not reused")
	}

	fewer := Hosts{Names: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	if s, err := LoadOrCreateSelfSigned(dir, fewer, now); err != nil || s.Created {
		t.Errorf("a certificate covering more hosts was replaced (%v)", err)
	}

	moved, err := LoadOrCreateSelfSigned(dir, testHosts("192.168.7.7"), now)
	if err != nil {
		t.Fatal(err)
	}
	if !moved.Created || moved.Certificate.Leaf.VerifyHostname("192.168.7.7") != nil {
		t.Error("a new address did not get a new certificate")
	}

	late := leaf.NotAfter.Add(-renewBefore + time.Hour)
	renewed, err := LoadOrCreateSelfSigned(dir, testHosts("192.168.7.7"), late)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.Created {
		t.Error("a certificate about to expire was not renewed")
	}

	if err := os.WriteFile(renewed.CertFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := LoadOrCreateSelfSigned(dir, testHosts(), now); err != nil || !s.Created {
		t.Errorf("a corrupt certificate was not replaced: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("the directory holds %d files, want 2 (no temporary files left)", len(entries))
	}
}

func TestURLs(t *testing.T) {
	t.Parallel()
	want := []string{
		"https://10.0.0.2:9090/", "https://192.168.1.5:9090/", "https://[2001:db8::5]:9090/",
		"https://mybox.local:9090/", "https://localhost:9090/",
	}
	h := testHosts("10.0.0.2", "2001:db8::5")
	h.normalize()
	got := h.URLs(9090)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("URLs = %v\nwant %v", got, want)
	}
	if got := (Hosts{Names: []string{"example.com"}}).URLs(443); fmt.Sprint(got) != "[https://example.com/]" {
		t.Errorf("URLs on 443 = %v", got)
	}
}

func TestLocalHosts(t *testing.T) {
	t.Parallel()
	h, err := LocalHosts()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"127.0.0.1", "::1"} {
		found := false
		for _, ip := range h.IPs {
			found = found || ip.String() == want
		}
		if !found {
			t.Errorf("LocalHosts lacks %s: %+v", want, h)
		}
	}
	if len(h.Names) == 0 || h.Names[0] == "" {
		t.Errorf("LocalHosts names: %v", h.Names)
	}
}

// trustingClient is an HTTP client that trusts only cert.
func trustingClient(t *testing.T, cert *x509.Certificate, serverName string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// serve serves h over TLS and plain HTTP on one 127.0.0.1 port with NewListener.
func serve(t *testing.T, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, cfg, ListenerConfig{})
	srv := &http.Server{Handler: RedirectPlain(h), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return raw.Addr().String()
}

var hello = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello over %s", r.TLS.NegotiatedProtocol)
})

func TestServeSelfSignedOverTLS(t *testing.T) {
	t.Parallel()
	s, err := LoadOrCreateSelfSigned(t.TempDir(), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, s.TLSConfig(), hello)
	_, port, _ := net.SplitHostPort(addr)

	for _, name := range []string{"127.0.0.1", "localhost"} {
		resp, err := trustingClient(t, s.Certificate.Leaf, name).Get("https://127.0.0.1:" + port + "/x")
		if err != nil {
			t.Fatalf("GET as %s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello") {
			t.Errorf("GET as %s: %d %q", name, resp.StatusCode, body)
		}
	}

	// A client that does not trust the certificate is refused, as a browser warns.
	untrusting := trustingClient(t, testCert(t), "127.0.0.1")
	if _, err := untrusting.Get("https://" + addr + "/"); err == nil {
		t.Error("a client that does not trust the certificate connected")
	}

	// Plain HTTP on the same port is redirected to https.
	resp, err := trustingClient(t, s.Certificate.Leaf, "").Get("http://" + addr + "/call?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "https://"+addr+"/call?x=1" {
		t.Errorf("plain HTTP: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// testCert returns some other self-signed certificate.
func testCert(t *testing.T) *x509.Certificate {
	t.Helper()
	s, err := LoadOrCreateSelfSigned(t.TempDir(), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s.Certificate.Leaf
}

// acceptingListener listens on a free 127.0.0.1 port with NewListener (s's certificate), and calls its Accept once
// in the background: accepted gets what that Accept returned.
func acceptingListener(t *testing.T, s *SelfSigned) (raw, l net.Listener, accepted <-chan error) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l = NewListener(raw, s.TLSConfig(), ListenerConfig{})
	ch := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		ch <- err
	}()
	return raw, l, ch
}

// TestListenerClosedAsItStarts: a server shut down as it starts closes the listener while its first Accept runs
// (tandem's Serve does, when it is stopped at once). Under -race this found Accept starting the accept loop
// while Close waited for the loops to end; now each Accept returns, with net.ErrClosed, and nothing is left running.
func TestListenerClosedAsItStarts(t *testing.T) {
	t.Parallel()
	s, err := LoadOrCreateSelfSigned(t.TempDir(), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		_, l, accepted := acceptingListener(t, s)
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-accepted; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("a second Accept after Close: %v, want net.ErrClosed", err)
		}
	}
}

func TestListenerCloseWithSilentConnection(t *testing.T) {
	t.Parallel()
	s, err := LoadOrCreateSelfSigned(t.TempDir(), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, l, accepted := acceptingListener(t, s)
	silent, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // let the listener take the connection
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with a silent connection", d)
	}
	if err := <-accepted; err == nil {
		t.Error("Accept returned a connection that sent nothing")
	}
}

func TestFromFilesReloads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, err := LoadOrCreateSelfSigned(filepath.Join(dir, "a"), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateSelfSigned(filepath.Join(dir, "b"), testHosts(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, a.CertFile, certFile)
	copyFile(t, a.KeyFile, keyFile)

	if _, err := FromFiles(certFile, filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("FromFiles with a missing key succeeded")
	}
	if _, err := FromFiles(certFile, b.KeyFile); err == nil {
		t.Error("FromFiles with a key that does not match succeeded")
	}

	r := &fileReloader{certFile: certFile, keyFile: keyFile, now: time.Now}
	clock := time.Now()
	r.now = func() time.Time { return clock }
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	serving := func() string {
		c, err := r.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	if serving() != a.Certificate.Leaf.SerialNumber.String() {
		t.Fatal("not serving the file's certificate")
	}
	copyFile(t, b.CertFile, certFile)
	copyFile(t, b.KeyFile, keyFile)
	future := time.Now().Add(time.Hour)
	_ = os.Chtimes(certFile, future, future)
	_ = os.Chtimes(keyFile, future, future)
	if serving() != a.Certificate.Leaf.SerialNumber.String() {
		t.Error("reloaded before the check interval")
	}
	clock = clock.Add(reloadCheckInterval)
	if serving() != b.Certificate.Leaf.SerialNumber.String() {
		t.Error("a renewed certificate was not picked up")
	}

	cfg, err := FromFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg, hello)
	resp, err := trustingClient(t, b.Certificate.Leaf, "localhost").Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRedirectHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		port            int
		host, uri, want string
	}{
		{443, "example.com", "/a?b=c", "https://example.com/a?b=c"},
		{443, "example.com:80", "/", "https://example.com/"},
		{0, "example.com", "/", "https://example.com/"},
		{9090, "192.168.1.5:80", "/x", "https://192.168.1.5:9090/x"},
		{8443, "[fd00::1]:80", "/", "https://[fd00::1]:8443/"},
		{8443, "[fd00::1]", "/", "https://[fd00::1]:8443/"},
		{443, "evil.com/@x", "/", ""},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "http://placeholder"+tt.uri, nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		RedirectHandler(tt.port).ServeHTTP(rec, req)
		if tt.want == "" {
			if rec.Code != http.StatusBadRequest {
				t.Errorf("%s: %d, want 400", tt.host, rec.Code)
			}
			continue
		}
		if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != tt.want {
			t.Errorf("%d %s%s: %d to %q, want %q", tt.port, tt.host, tt.uri, rec.Code, rec.Header().Get("Location"), tt.want)
		}
	}
}

func TestACME(t *testing.T) {
	t.Parallel()
	for _, bad := range []ACMEConfig{
		{CacheDir: t.TempDir()},
		{Domains: []string{"localhost"}, CacheDir: t.TempDir()},
		{Domains: []string{"https://example.com"}, CacheDir: t.TempDir()},
		{Domains: []string{"example.com"}},
	} {
		if _, err := NewACME(bad); err == nil {
			t.Errorf("NewACME(%+v) succeeded", bad)
		}
	}
	cache := filepath.Join(t.TempDir(), "acme")
	a, err := NewACME(ACMEConfig{Domains: []string{"tandem.example.com"}, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cache directory: %v", err)
	}
	// A name that is not ours is refused before any certificate authority is asked.
	cfg := a.TLSConfig()
	if _, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.com"}); err == nil {
		t.Error("a certificate for a foreign name was handed out")
	}

	h := a.HTTPHandler(nil)
	req := httptest.NewRequest("GET", "http://tandem.example.com/call", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if loc := rec.Header().Get("Location"); rec.Code/100 != 3 || loc != "https://tandem.example.com/call" {
		t.Errorf("plain request: %d to %q", rec.Code, loc)
	}
	req = httptest.NewRequest("GET", "http://tandem.example.com/.well-known/acme-challenge/unknown-token", nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown challenge: %d, want 404", rec.Code)
	}
}
