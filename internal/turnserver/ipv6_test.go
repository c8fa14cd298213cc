package turnserver

import (
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// turnClient6 is pion's TURN client of its next major version, which reaches servers on IPv6 (v4's resolves
// server addresses as IPv4 only) and asks for a relay of its socket's family (REQUESTED-ADDRESS-FAMILY).
type turnClient6 struct {
	*turn.Client
	conn net.PacketConn
}

// newClientAt is a pion TURN client over "udp", "tcp" or "tls" (with cfg) to the server at addr, of addr's family.
func newClientAt(t *testing.T, network, addr, username, password string, cfg ...*tls.Config) *turnClient6 {
	t.Helper()
	var conn net.PacketConn
	switch network {
	case "udp":
		ap := netip.MustParseAddrPort(addr)
		c, err := net.ListenPacket(udpNetwork(ap.Addr()), net.JoinHostPort(ap.Addr().String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	case "tls":
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg[0]}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Username: username, Password: password, Conn: conn,
		RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	tc := &turnClient6{Client: c, conn: conn}
	t.Cleanup(func() {
		c.Close()
		_ = conn.Close()
	})
	return tc
}

func hasIPv6Loopback(t *testing.T) {
	t.Helper()
	l, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	_ = l.Close()
}

// TestRelayOverIPv6 listens on ::1 and relays for clients over UDP, TCP and TLS, on IPv6 relays, to an IPv6
// peer, both ways; the channel data went by tandem's own path.
func TestRelayOverIPv6(t *testing.T) {
	t.Parallel()
	hasIPv6Loopback(t)
	s, _ := startServer(t, func(c *Config) {
		withTLS(t)(c)
		c.ListenAddr = "[::1]:0"
	})
	for _, network := range []string{"udp", "tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			user, pass := credential(t, s, "alice", "login-"+network)
			port := s.Port()
			if network == "tls" {
				port = s.TLSPort()
			}
			c := newClientAt(t, network, net.JoinHostPort("::1", strconv.Itoa(port)), user, pass, clientTLS(t, "::1"))
			before := s.channelPacketsRelayed()
			relay := relayBothWays(t, c, "::1")
			if ip := relay.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv6loopback) {
				t.Errorf("relay on %v, want ::1", ip)
			}
			if s.channelPacketsRelayed() == before {
				t.Error("nothing went by tandem's channel data path")
			}
		})
	}
	servers := s.ICEServers("alice", "[::1]:9090", "login-1")
	want := "stun:[::1]:" + strconv.Itoa(s.Port())
	if len(servers) != 2 || servers[0].URLs[0] != want ||
		!slices.Contains(servers[1].URLs, "turns:[::1]:"+strconv.Itoa(s.TLSPort())+"?transport=tcp") {
		t.Errorf("ICEServers = %+v, want %s and a turns: URL on [::1]", servers, want)
	}
}

// TestDualStack listens on every address of the machine, IPv4 and IPv6: a client that reaches ::1 gets an IPv6
// relay, one that reaches 127.0.0.1 an IPv4 relay; the URLs name the address the page was opened by.
func TestDualStack(t *testing.T) {
	t.Parallel()
	hasIPv6Loopback(t)
	s, _ := startServer(t, func(c *Config) {
		c.ListenAddr = ":0"
		c.AllowLoopback = true
	})
	port := strconv.Itoa(s.Port())
	for _, tt := range []struct{ server, peer string }{{"127.0.0.1", "127.0.0.1"}, {"::1", "::1"}} {
		user, pass := credential(t, s, "alice", "login-"+tt.server)
		relay := relayBothWays(t, newClientAt(t, "udp", net.JoinHostPort(tt.server, port), user, pass), tt.peer)
		if ip := relay.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.ParseIP(tt.server)) {
			t.Errorf("a client of %s: relay on %v", tt.server, ip)
		}
	}
	for host, want := range map[string]string{
		"[::1]:9090":         "stun:[::1]:" + port,
		"127.0.0.1:9090":     "stun:127.0.0.1:" + port,
		"localhost:9090":     "stun:127.0.0.1:" + port,
		"[2001:db8::1]:9090": "", // not an address of this machine: the machine's own instead
	} {
		urls := s.ICEServers("alice", host, "login-1")[0].URLs
		switch {
		case want != "" && (len(urls) != 1 || urls[0] != want):
			t.Errorf("page at %s: STUN URLs %v, want %s", host, urls, want)
		case want == "" && slices.ContainsFunc(urls, func(u string) bool { return strings.Contains(u, "2001:db8") }):
			t.Errorf("page at %s: STUN URLs %v name an address the server does not listen on", host, urls)
		}
	}
}

// TestPeerOfTheOtherFamilyRefused checks that an IPv4 relay permits no IPv6 peer and an IPv6 relay no IPv4 peer
// (it could not send to them), even where the policy allows the address.
func TestPeerOfTheOtherFamilyRefused(t *testing.T) {
	t.Parallel()
	hasIPv6Loopback(t)
	s, _ := startServer(t, func(c *Config) {
		c.ListenAddr = ":0"
		c.AllowLoopback = true
	})
	port := strconv.Itoa(s.Port())
	for _, tt := range []struct{ server, other string }{{"127.0.0.1", "[::1]:9"}, {"::1", "127.0.0.1:9"}} {
		user, pass := credential(t, s, "alice", "login-"+tt.server)
		c := newClientAt(t, "udp", net.JoinHostPort(tt.server, port), user, pass)
		relay, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		peer, _ := net.ResolveUDPAddr("udp", tt.other)
		if err := c.CreatePermission(peer); err == nil {
			t.Errorf("a relay on %s permitted %s", tt.server, tt.other)
		}
		_ = relay.Close()
	}
}

// TestIPv6AddressCapCountsSlash64 checks that the per-address caps count an IPv6 client by its /64: a client with
// a /64 of its own cannot take more allocations, or TCP connections, by sending from more of its addresses.
func TestIPv6AddressCapCountsSlash64(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, func(c *Config) { c.MaxAllocationsPerAddress = 2 })
	user, _ := credential(t, s, "alice", "login-1")
	from := func(ip string) net.Addr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: 5000} }
	for i, tt := range []struct {
		ip   string
		want bool
	}{
		{"2001:db8:1:2::1", true},
		{"2001:db8:1:2:ffff::9", true},
		{"2001:db8:1:2::3", false}, // the same /64: its cap of 2 is reached
		{"2001:db8:1:3::1", true},  // another /64
		{"192.0.2.1", true},
	} {
		if got := s.quota(user, "tandem", from(tt.ip)); got != tt.want {
			t.Errorf("%d: quota for %s = %v, want %v", i, tt.ip, got, tt.want)
		}
	}
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitAddress); got != 1 {
		t.Errorf("limited{address} = %v, want 1", got)
	}
	limits := newTCPLimits(-1, 1)
	a := &trackedConn{key: connKey{remote: netip.MustParseAddrPort("[2001:db8::1]:1000")}}
	b := &trackedConn{key: connKey{remote: netip.MustParseAddrPort("[2001:db8::2]:1000")}}
	if limits.admit(a) != "" || limits.admit(b) != limitTCPAddress {
		t.Error("a second TCP connection from the same /64 was admitted over a per-address cap of 1")
	}
}
