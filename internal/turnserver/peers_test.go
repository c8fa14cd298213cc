package turnserver

import (
	"net"
	"net/netip"
	"testing"
)

// TestIsRelay: the server knows its live relays by address and port (the echo test peer may reach them), and
// forgets a relay once it is closed.
func TestIsRelay(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, nil)
	user, pass := credential(t, s, "alice", "login-1")
	relay, err := newClient(t, s, "udp", user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	ua := relay.LocalAddr().(*net.UDPAddr)
	addr := netip.AddrPortFrom(netip.MustParseAddr(ua.IP.String()), uint16(ua.Port))
	other := netip.AddrPortFrom(addr.Addr(), addr.Port()+1)
	if !s.IsRelay(addr) || !s.HasRelayOn(addr.Addr()) {
		t.Errorf("IsRelay(%v) = %v, HasRelayOn = %v; want both true for a live relay", addr, s.IsRelay(addr), s.HasRelayOn(addr.Addr()))
	}
	if s.IsRelay(other) {
		t.Errorf("IsRelay(%v) = true, another port of the relay's address", other)
	}
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relay forgotten", func() bool { return !s.IsRelay(addr) && !s.HasRelayOn(addr.Addr()) })
}
