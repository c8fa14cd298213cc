package auth_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/server"
	"tandem/protocol"
)

// dialAs connects as a client whose proxy forwards header (X-Forwarded-For and so on); it returns the client,
// or the handshake's error.
func (e *env) dialAs(header http.Header) (*client.Client, error) {
	c, err := client.Dial(e.ctx, e.srv.URL, &client.Options{Header: header})
	if err == nil {
		e.t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, err
}

func forwardedFor(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }

// Behind a trusted reverse proxy (here the test, on 127.0.0.1, with -trusted-proxies 127.0.0.1) each client is
// held to the per-address caps and the login throttle under the address the proxy forwards: a stranger who uses
// up its own allowance does not lock the proxy's other clients out.
func TestBehindTrustedProxy(t *testing.T) {
	cfg := auth.Config{Mode: auth.Password, Password: "family password", LimitLoopback: true, LoginBurst: 2, LoginRate: 0.01}
	e := start(t, cfg, func(c *server.Config) {
		c.LimitLoopback, c.MaxUnloggedPerAddr = true, 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	frozen := time.Now()
	auth.SetClock(e.a, func() time.Time { return frozen })

	stranger, err := e.dialAs(forwardedFor("198.51.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dialAs(forwardedFor("198.51.100.1")); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("a second waiting connection of one forwarded address: %v", err)
	}
	friend, err := e.dialAs(forwardedFor("203.0.113.7, 198.51.100.2"))
	if err != nil {
		t.Fatalf("another client of the proxy was capped with the first: %v", err)
	}
	// The stranger's guesses use up its allowance; the friend's login is still checked, and gets in.
	for i, want := range []string{protocol.CodeUnauthorized, protocol.CodeUnauthorized, protocol.CodeRateLimited} {
		m := e.login(stranger, "guess"+string(rune('a'+i)), "", client.Credentials{Password: "guess"})
		expectRefusal(t, m, want)
	}
	if m := e.login(friend, "friend", "", client.Credentials{Password: "family password"}); !m.Success {
		t.Fatalf("the friend behind the same proxy: %s %q", m.Code, m.Message)
	}

	// A header whose client address cannot be read is refused, with a reason.
	if _, err := e.dialAs(forwardedFor("proxy-bug")); err == nil || !strings.Contains(err.Error(), "400") ||
		!strings.Contains(err.Error(), "X-Forwarded-For") {
		t.Fatalf("a malformed X-Forwarded-For: %v", err)
	}
}

// From a peer that is not a trusted proxy the headers are ignored: a stranger cannot pick the address it is
// counted under.
func TestUntrustedForwardedIgnored(t *testing.T) {
	cfg := auth.Config{Mode: auth.Password, Password: "family password", LimitLoopback: true, LoginBurst: 1, LoginRate: 0.01}
	e := start(t, cfg, func(c *server.Config) {
		c.LimitLoopback, c.MaxUnloggedPerAddr = true, 2
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	frozen := time.Now()
	auth.SetClock(e.a, func() time.Time { return frozen })
	first, err := e.dialAs(forwardedFor("198.51.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.dialAs(forwardedFor("198.51.100.2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dialAs(forwardedFor("198.51.100.3")); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("a third connection from one address, with a header of its own: %v", err)
	}
	expectRefusal(t, e.login(first, "a", "", client.Credentials{Password: "guess"}), protocol.CodeUnauthorized)
	expectRefusal(t, e.login(second, "b", "", client.Credentials{Password: "guess"}), protocol.CodeRateLimited)
	if _, err := e.dialAs(forwardedFor("garbage")); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("a malformed header from a stranger is ignored (its address's cap answers): %v", err)
	}
}
