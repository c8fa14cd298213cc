package turnserver

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListeningSockets checks that the UDP port is served by Config.UDPSockets sockets bound together, each with
// a 4 MiB receive buffer where the system allows it, and that clients spread over them all relay to each other.
func TestListeningSockets(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true; c.UDPSockets = 3 })
	raw, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Skip(err)
	}
	local := fmt.Sprintf("0100007F:%04X", s.Port())
	if got := strings.Count(string(raw), local); got != 3 {
		t.Errorf("%d UDP sockets on 127.0.0.1:%d, want 3", got, s.Port())
	}
	rmemMax, _ := os.ReadFile("/proc/sys/net/core/rmem_max")
	for _, pcs := range s.udpConns {
		for _, pc := range pcs {
			rc, _ := pc.SyscallConn()
			var size int
			_ = rc.Control(func(fd uintptr) { size, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
			// The kernel reports twice what was granted; without CAP_NET_ADMIN it grants up to rmem_max.
			if max, _ := strconv.Atoi(strings.TrimSpace(string(rmemMax))); size < 2*socketBuffer && (os.Geteuid() == 0 || max >= socketBuffer) {
				t.Errorf("receive buffer of %d bytes, want %d", size/2, socketBuffer)
			}
		}
	}

	// Clients in pairs, relay to relay through channels; the two of a pair may have landed on different sockets.
	user, pass := credential(t, s, "alice", "login-1")
	for i := range 6 {
		a, b := dialTURN(t, s, "udp", user, pass), dialTURN(t, s, "udp", user, pass)
		relayA, err := a.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		relayB, err := b.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.BindChannel(0x4001, relayB); err != nil {
			t.Fatal(err)
		}
		if err := b.BindChannel(0x4002, relayA); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("pair %d", i)
		if err := a.SendChannelData(0x4001, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := clientGets(t, b, 5*time.Second); got != fmt.Sprintf("channel 0x4002 %q", msg) {
			t.Errorf("pair %d: b got %s", i, got)
		}
		if err := b.SendChannelData(0x4002, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := clientGets(t, a, 5*time.Second); got != fmt.Sprintf("channel 0x4001 %q", msg) {
			t.Errorf("pair %d: a got %s", i, got)
		}
	}
}
