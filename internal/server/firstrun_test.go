package server_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tandem/internal/certs"
	"tandem/internal/firstrun"
	"tandem/internal/server"
	"tandem/internal/servertest"
)

// TestPlainHTTPFirstRun: with a self-signed certificate, the plain http address serves the first-run page rather
// than a redirect into the browser's warning: the page, the fingerprint of the certificate the https address
// really serves, and a link to that address, which then serves the web client.
func TestPlainHTTPFirstRun(t *testing.T) {
	self, err := certs.LoadOrCreateSelfSigned(t.TempDir(), certs.Hosts{
		Names: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	page := firstrun.New(self.Fingerprint())
	cfg := server.DefaultConfig()
	cfg.TLS = self.TLSConfig()
	cfg.FirstRun = page
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := servertest.Serve(t, srv, nil).Addr
	page.SetURLs([]string{"https://" + addr + "/", "https://localhost" + addr[strings.LastIndex(addr, ":"):] + "/"})

	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(c *http.Client, url string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	resp, body := get(plain, "http://"+addr+"/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `src="/js/firstrun.js"`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("plain http /: %d %q, CSP %q:\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"),
			resp.Header.Get("Content-Security-Policy"), body)
	}
	for _, path := range []string{"/js/firstrun.js", "/css/firstrun.css", "/js/i18n.js", "/js/lang/zh-Hans.js"} {
		if resp, _ := get(plain, "http://"+addr+path); resp.StatusCode != http.StatusOK {
			t.Errorf("plain http %s: %d", path, resp.StatusCode)
		}
	}

	// The fingerprint the page shows is the one of the certificate a TLS handshake gets.
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	sum := sha256.Sum256(served.Raw)
	var want []string
	for _, b := range sum {
		want = append(want, fmt.Sprintf("%02X", b))
	}
	_, body = get(plain, "http://"+addr+"/first-run.json")
	var info firstrun.Info
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("first-run.json: %v: %s", err, body)
	}
	if info.Fingerprint != strings.Join(want, ":") {
		t.Errorf("the page's fingerprint %s, the served certificate's %s", info.Fingerprint, strings.Join(want, ":"))
	}
	if info.URL != "https://"+addr+"/" {
		t.Errorf("the page links to %q, want the address the browser used, https://%s/", info.URL, addr)
	}

	// The link works for a browser that accepted the certificate: the web client.
	pool := x509.NewCertPool()
	pool.AddCert(self.Certificate.Leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, body = get(&http.Client{Transport: tr, Timeout: 10 * time.Second}, info.URL)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `src="/js/app.js"`) {
		t.Errorf("https %s: %d, not the web client:\n%.300s", info.URL, resp.StatusCode, body)
	}

	// Anything else over plain http is still sent to https.
	if resp, _ := get(plain, "http://"+addr+"/healthz"); resp.StatusCode != http.StatusTemporaryRedirect ||
		resp.Header.Get("Location") != "https://"+addr+"/healthz" {
		t.Errorf("plain http /healthz: %d to %q, want a redirect to https", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestPlainHTTPRedirectWithRealCertificate: without a first-run page (a certificate browsers trust: -tls-cert,
// -acme-domain), plain http on the HTTPS port is redirected to https as before, the page included.
func TestPlainHTTPRedirectWithRealCertificate(t *testing.T) {
	self, err := certs.LoadOrCreateSelfSigned(t.TempDir(), certs.Hosts{IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.TLS = self.TLSConfig() // as -tls-cert would: no FirstRun
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := servertest.Serve(t, srv, nil).Addr
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/first-run.json", "/?invite=abc"} {
		resp, err := plain.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "https://"+addr+path {
			t.Errorf("plain http %s: %d to %q, want a redirect to https", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}
