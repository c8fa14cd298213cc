package ws

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// handshakeWith sends a handshake with extra header lines and returns the answer's status, body and
// Retry-After. The connection stays open until the test ends.
func handshakeWith(t *testing.T, h *harness, extra string) (int, string, string) {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := strings.Replace(handshakeRequest, "Host: x\r\n", "Host: x\r\n"+extra, 1)
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header.Get("Retry-After")
}

// Behind a trusted reverse proxy each client is counted under the address the proxy forwards: two clients of one
// proxy are capped separately, the proxy itself is not capped like a client, and a header whose deciding entry
// is not an address is refused with 400. From a peer that is not a trusted proxy the headers are ignored.
func TestTrustedProxies(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			cfg := Config{NoEpoll: mode.noEpoll, MaxConnsPerAddr: 1, MaxUnloggedPerAddr: 1, LimitLoopback: true,
				CloseTimeout: 200 * time.Millisecond, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
			h := startDoor(t, cfg, false, mode.door)
			admitted := func(extra, want string) {
				t.Helper()
				if code, body, _ := handshakeWith(t, h, extra); code != http.StatusSwitchingProtocols {
					t.Fatalf("%q: %d %q", extra, code, body)
				}
				if got := h.next(t).c.RemoteIP(); got != netip.MustParseAddr(want) {
					t.Fatalf("%q: RemoteIP %v, want %s", extra, got, want)
				}
			}
			admitted("X-Forwarded-For: 198.51.100.1\r\n", "198.51.100.1")
			if code, body, _ := handshakeWith(t, h, "X-Forwarded-For: 198.51.100.1\r\n"); code != http.StatusTooManyRequests {
				t.Fatalf("a second connection of 198.51.100.1: %d %q", code, body)
			}
			// Another client of the same proxy has its own allowance; what the client wrote to the left of what
			// the proxy appended is not looked at, nor are the trusted proxies on the way.
			admitted("X-Forwarded-For: 198.51.100.2\r\n", "198.51.100.2")
			admitted("X-Forwarded-For: not an address, 10.9.9.9, 198.51.100.3\r\n", "198.51.100.3")
			admitted("X-Forwarded-For: 198.51.100.4\r\nX-Forwarded-For: 127.0.0.1\r\n", "198.51.100.4")
			admitted("Forwarded: for=\"[2001:db8::1]:4711\";proto=https\r\n", "2001:db8::1")
			// The proxy's own connections (no header) are not capped as a client's.
			admitted("", "127.0.0.1")
			admitted("", "127.0.0.1")
			for _, bad := range []string{"X-Forwarded-For: not-an-address\r\n", "X-Forwarded-For: 198.51.100.5, \r\n",
				"Forwarded: for=unknown\r\n", "Forwarded: proto=https\r\n"} {
				code, body, retry := handshakeWith(t, h, bad)
				if code != http.StatusBadRequest || !strings.Contains(body, "X-Forwarded-For") || retry != "" {
					t.Errorf("%q: %d %q, Retry-After %q", bad, code, body, retry)
				}
			}
		})
		t.Run(mode.name+"/untrusted peer", func(t *testing.T) {
			cfg := Config{NoEpoll: mode.noEpoll, MaxConnsPerAddr: 1, MaxUnloggedPerAddr: 1, LimitLoopback: true,
				CloseTimeout: 200 * time.Millisecond, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
			h := startDoor(t, cfg, false, mode.door)
			if code, body, _ := handshakeWith(t, h, "X-Forwarded-For: 198.51.100.1\r\n"); code != http.StatusSwitchingProtocols {
				t.Fatalf("%d %q", code, body)
			}
			if got := h.next(t).c.RemoteIP(); got != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("RemoteIP %v: the header of a peer that is no trusted proxy was believed", got)
			}
			if code, body, _ := handshakeWith(t, h, "X-Forwarded-For: 198.51.100.2\r\n"); code != http.StatusTooManyRequests {
				t.Fatalf("a stranger escaped its address's cap with a header: %d %q", code, body)
			}
			if code, body, _ := handshakeWith(t, h, "X-Forwarded-For: garbage\r\n"); code != http.StatusTooManyRequests {
				t.Fatalf("a malformed header from a stranger is ignored (the cap answers): %d %q", code, body)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.5, 192.168.0.0/16,fd00::/8, ::ffff:172.16.0.0/108 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.5/32", "192.168.0.0/16", "fd00::/8", "172.16.0.0/12"}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("%d: %v, want %s", i, got[i], want[i])
		}
	}
	if p, err := ParseTrustedProxies(""); err != nil || p != nil {
		t.Errorf("empty: %v %v", p, err)
	}
	for _, bad := range []string{"proxy.example", "10.0.0.0/33", "10.0.0.1:80", "fe80::1%eth0"} {
		if _, err := ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
