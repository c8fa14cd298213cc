package turnserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"tandem/internal/turnserver/turnclient"
)

// dialTURN connects a raw TURN client to s over network from 127.0.0.1.
func dialTURN(t testing.TB, s *Server, network, user, pass string) *turnclient.Client {
	t.Helper()
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port()))
	c, err := turnclient.Dial(network, server, user, pass, &turnclient.Options{RTO: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// udpPeer is a peer socket on the loopback address ip (permissions are by IP address: peers that are to have
// permissions of their own need addresses of their own).
func udpPeer(t testing.TB, ip string) *net.UDPConn {
	t.Helper()
	p, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// exchange is the differential test's world: one client with an allocation, two peers, and what each of them
// received, step by step, with addresses replaced by names so that two servers' transcripts compare.
type exchange struct {
	t      *testing.T
	c      *turnclient.Client
	p1, p2 *net.UDPConn
	names  map[netip.AddrPort]string
	relays int
	lines  []string
}

func (x *exchange) name(a netip.AddrPort) string {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	if n, ok := x.names[a]; ok {
		return n
	}
	return "unknown " + a.String()
}

func (x *exchange) allocate() netip.AddrPort {
	relay, err := x.c.Allocate()
	x.result("Allocate", err)
	if err == nil {
		x.relays++
		x.names[relay] = fmt.Sprintf("relay%d", x.relays)
	}
	return relay
}

func (x *exchange) result(what string, err error) {
	var e *turnclient.Error
	switch {
	case err == nil:
		x.lines = append(x.lines, what+": ok")
	case errors.As(err, &e):
		x.lines = append(x.lines, fmt.Sprintf("%s: error %d", what, e.Code))
	case errors.Is(err, turnclient.ErrTimeout):
		x.lines = append(x.lines, what+": no response")
	default:
		x.t.Fatalf("%s: %v", what, err)
	}
}

// drain records what the client and the peers receive until each has been quiet for a while.
func (x *exchange) drain(step string) {
	const quiet = 80 * time.Millisecond
	x.lines = append(x.lines, "-- "+step)
	for {
		_ = x.c.SetReadDeadline(time.Now().Add(quiet))
		f, err := x.c.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			x.t.Fatalf("client read: %v", err)
		}
		switch m := f.Message; {
		case m == nil && f.Data == nil:
			x.lines = append(x.lines, fmt.Sprintf("client: a bad frame on channel %#x", f.Channel))
		case m == nil:
			x.lines = append(x.lines, fmt.Sprintf("client: channel %#x %q", f.Channel, f.Data))
		case m.Type == stun.NewType(stun.MethodData, stun.ClassIndication):
			var peer stun.XORMappedAddress
			data, _ := m.Get(stun.AttrData)
			_ = peer.GetFromAs(m, stun.AttrXORPeerAddress)
			ip, _ := netip.AddrFromSlice(peer.IP)
			x.lines = append(x.lines, fmt.Sprintf("client: data indication from %s %q", x.name(netip.AddrPortFrom(ip, uint16(peer.Port))), data))
		case m.Type.Class == stun.ClassSuccessResponse || m.Type.Class == stun.ClassErrorResponse:
			// The answer to a request sent again (UDP) after its first answer came: timing, not behaviour.
		default:
			x.lines = append(x.lines, fmt.Sprintf("client: %v", m.Type))
		}
	}
	for _, p := range []*net.UDPConn{x.p1, x.p2} {
		buf := make([]byte, 2048)
		for {
			_ = p.SetReadDeadline(time.Now().Add(quiet))
			n, from, err := p.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			x.lines = append(x.lines, fmt.Sprintf("%s: %q from %s", x.name(addrOf(p)), buf[:n], x.name(from)))
		}
	}
}

func (x *exchange) channelData(number uint16, data string) {
	if err := x.c.SendChannelData(number, []byte(data)); err != nil {
		x.t.Fatal(err)
	}
}

func (x *exchange) fromPeer(p *net.UDPConn, relay netip.AddrPort, data string) {
	if _, err := p.WriteToUDPAddrPort([]byte(data), relay); err != nil {
		x.t.Fatal(err)
	}
}

// sizesFor are the sizes of the channel data the script sends both ways.
func sizesFor(network string) []int {
	if network == "udp" {
		return []int{5, 100, 1200, 1500, 0, 1}
	}
	return []int{5, 100, 1200, 1500} // over TCP, pion waits for 9 bytes before it reads a frame
}

// script is the differential test's sequence of requests and packets, the same for every server.
func (x *exchange) script(network string) {
	p1, p2 := addrOf(x.p1), addrOf(x.p2)
	relay := x.allocate()
	x.drain("allocated")

	x.fromPeer(x.p1, relay, "from p1 before any permission")
	x.drain("a peer without a permission")

	x.result("CreatePermission p1", x.c.CreatePermission(p1))
	x.result("BindChannel 0x4000 p1", x.c.BindChannel(0x4000, p1))
	for _, n := range sizesFor(network) {
		x.channelData(0x4000, strings.Repeat("c", n))
		x.fromPeer(x.p1, relay, strings.Repeat("p", n))
	}
	x.drain("channel data both ways")

	x.channelData(0x4001, "on a channel not bound")
	x.fromPeer(x.p2, relay, "from p2 without a permission")
	x.result("SendIndication p2", x.c.SendIndication(p2, []byte("send to p2 without a permission")))
	x.drain("what has no permission or channel")

	if network == "udp" {
		frame := turnclient.AppendChannelData(nil, 0x4000, []byte("announces more than it carries"), false)
		binary.BigEndian.PutUint16(frame[2:], uint16(len(frame)))
		_ = x.c.WriteRaw(frame)
		_ = x.c.WriteRaw([]byte{0x40, 0x00, 0x00}) // shorter than a header
		x.drain("malformed channel data")
	}

	x.result("CreatePermission p2", x.c.CreatePermission(p2))
	x.fromPeer(x.p2, relay, "from p2 with a permission, no channel")
	x.result("SendIndication p2", x.c.SendIndication(p2, []byte("send to p2 with a permission")))
	x.drain("a permission without a channel: indications")

	x.result("BindChannel 0x4000 p2 (bound to p1)", x.c.BindChannel(0x4000, p2))
	x.result("BindChannel 0x4001 p1 (bound to 0x4000)", x.c.BindChannel(0x4001, p1))
	x.result("BindChannel 0x4001 p2", x.c.BindChannel(0x4001, p2))
	x.result("BindChannel 0x4000 p1 (a refresh)", x.c.BindChannel(0x4000, p1))
	x.channelData(0x4001, "to p2 on its channel")
	x.channelData(0x4000, "to p1 on its channel")
	x.fromPeer(x.p2, relay, "from p2 on its channel")
	x.fromPeer(x.p1, relay, "from p1 on its channel")
	x.drain("two channels")

	x.result("Refresh 600s", x.c.Refresh(10*time.Minute))
	x.channelData(0x4000, "after a refresh")
	x.drain("refreshed")

	x.result("Refresh 0 (delete)", x.c.Refresh(0))
	x.channelData(0x4000, "after the allocation was deleted")
	x.fromPeer(x.p1, relay, "to the deleted relay")
	x.drain("deleted")

	relay2 := x.allocate()
	x.channelData(0x4000, "on a channel of the deleted allocation")
	x.fromPeer(x.p1, relay2, "to the new relay without a permission")
	// Handled before the binding below: a peer's datagram and a client's request arrive on different sockets, in
	// no order a server can promise.
	x.drain("a new allocation without a permission")
	x.result("BindChannel 0x4000 p1 again", x.c.BindChannel(0x4000, p1))
	x.channelData(0x4000, "on the new allocation's channel")
	x.fromPeer(x.p1, relay2, "from p1 to the new relay")
	x.drain("a new allocation on the same 5-tuple")
}

// TestChannelDataSameAsPion runs one script of requests and packets against a server that relays channel data
// itself and one that leaves everything to pion, and checks that the client and the peers receive the same.
func TestChannelDataSameAsPion(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			transcripts := make(map[bool][]string)
			for _, own := range []bool{true, false} {
				s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true }, func(s *Server) { s.channelPath = own })
				user, pass := credential(t, s, "alice", "login-1")
				x := &exchange{t: t, c: dialTURN(t, s, network, user, pass), p1: udpPeer(t, "127.0.0.1"), p2: udpPeer(t, "127.0.0.2"),
					names: make(map[netip.AddrPort]string)}
				x.names[addrOf(x.p1)], x.names[addrOf(x.p2)] = "p1", "p2"
				x.script(network)
				transcripts[own] = x.lines
				// Every packet on a channel, and only those, went by tandem's path: 2 for each size, 4 on two
				// channels, 1 after the refresh, 2 on the new allocation.
				want := uint64(0)
				if own {
					want = 2*uint64(len(sizesFor(network))) + 4 + 1 + 2
				}
				if got := s.channelPacketsRelayed(); got != want {
					t.Errorf("channel path on: %v; packets it relayed: %d, want %d", own, got, want)
				}
			}
			own, pion := transcripts[true], transcripts[false]
			if !slices.Equal(own, pion) {
				t.Errorf("tandem's channel path and pion's differ:\ntandem:\n%s\npion:\n%s", strings.Join(own, "\n"), strings.Join(pion, "\n"))
			}
			// The script means something: the channel data went through both ways, and the refused went nowhere.
			for _, want := range []string{
				`client: channel 0x4000 "` + strings.Repeat("p", 1200) + `"`,
				`p1: "` + strings.Repeat("c", 1200) + `" from relay1`,
				`client: data indication from p2 "from p2 with a permission, no channel"`,
				`p2: "to p2 on its channel" from relay1`,
				`client: channel 0x4001 "from p2 on its channel"`,
				`BindChannel 0x4000 p2 (bound to p1): error 400`,
				`p1: "on the new allocation's channel" from relay2`,
				`client: channel 0x4000 "from p1 to the new relay"`,
			} {
				if !slices.Contains(own, want) {
					t.Errorf("tandem's transcript lacks %s", want)
				}
			}
			for _, line := range own {
				if strings.HasPrefix(line, "-- ") {
					continue
				}
				if strings.Contains(line, "without a permission") || strings.Contains(line, "not bound") ||
					strings.Contains(line, "deleted") || strings.Contains(line, "announces") {
					t.Errorf("relayed what must not be: %s", line)
				}
			}
		})
	}
}

// channelPacketsRelayed sums the packets the channel data path relayed on the relays open now and before.
func (s *Server) channelPacketsRelayed() uint64 {
	s.amu.Lock()
	defer s.amu.Unlock()
	n := s.closedChannelPackets
	for _, rc := range s.relays {
		n += rc.channelPackets.Load()
	}
	return n
}

// bindOne allocates for a client of s over network, and binds channel 0x4000 to a new peer.
func bindOne(t testing.TB, s *Server, network string) (c *turnclient.Client, relay netip.AddrPort, peer *net.UDPConn) {
	t.Helper()
	user, pass := credential(t, s, "alice", "login-1")
	c = dialTURN(t, s, network, user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	peer = udpPeer(t, "127.0.0.1")
	if err := c.BindChannel(0x4000, addrOf(peer)); err != nil {
		t.Fatalf("BindChannel: %v", err)
	}
	return c, relay, peer
}

// clientGets reads from c until it gets a ChannelData frame or a Data indication, and describes it.
func clientGets(t *testing.T, c *turnclient.Client, within time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		f, err := c.Read()
		if err != nil {
			return "nothing"
		}
		switch {
		case f.Message == nil:
			return fmt.Sprintf("channel %#x %q", f.Channel, f.Data)
		case f.Message.Type == stun.NewType(stun.MethodData, stun.ClassIndication):
			data, _ := f.Message.Get(stun.AttrData)
			return fmt.Sprintf("data indication %q", data)
		}
	}
}

func peerGets(t *testing.T, p *net.UDPConn, within time.Duration) string {
	t.Helper()
	buf := make([]byte, 2048)
	_ = p.SetReadDeadline(time.Now().Add(within))
	n, _, err := p.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "nothing"
	}
	return string(buf[:n])
}

// TestChannelExpires checks that once a channel binding expires (pion's timer), its data is relayed no more:
// the peer's datagrams reach the client as Data indications while the permission lasts, as RFC 8656 says, and
// the client's ChannelData on the old number goes nowhere.
func TestChannelExpires(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true }, func(s *Server) { s.channelLifetime = time.Second })
			c, relay, peer := bindOne(t, s, network)
			if err := c.SendChannelData(0x4000, []byte("while bound")); err != nil {
				t.Fatal(err)
			}
			if got := peerGets(t, peer, 5*time.Second); got != "while bound" {
				t.Fatalf("the peer got %s, want the channel data", got)
			}
			if _, err := peer.WriteToUDPAddrPort([]byte("back while bound"), relay); err != nil {
				t.Fatal(err)
			}
			if got := clientGets(t, c, 5*time.Second); got != `channel 0x4000 "back while bound"` {
				t.Fatalf("the client got %s, want the channel data", got)
			}

			rc := s.relayAt(net.UDPAddrFromAddrPort(relay))
			waitFor(t, "the channel to expire", func() bool { return len(rc.routes.Load().routes) == 0 })
			if err := c.SendChannelData(0x4000, []byte("after expiry")); err != nil {
				t.Fatal(err)
			}
			if got := peerGets(t, peer, 300*time.Millisecond); got != "nothing" {
				t.Errorf("the peer got %q on an expired channel", got)
			}
			if _, err := peer.WriteToUDPAddrPort([]byte("back after expiry"), relay); err != nil {
				t.Fatal(err)
			}
			if got := clientGets(t, c, 5*time.Second); got != `data indication "back after expiry"` {
				t.Errorf("the client got %s, want a data indication (the permission lasts)", got)
			}
		})
	}
}

// TestChannelWithoutPermissionDropped checks that data on a channel whose peer's permission has expired is
// dropped both ways (RFC 8656, section 9), until the permission is made again. A permission lives 5 minutes in
// pion, fixed, so the test delivers the event pion's timer fires (OnPermissionDeleted) itself; pion's own path
// relayed such data.
func TestChannelWithoutPermissionDropped(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true })
			c, relay, peer := bindOne(t, s, network)
			relayAddr := net.UDPAddrFromAddrPort(relay)
			s.onPermissionDeleted(nil, nil, "", "", "", relayAddr, net.IPv4(127, 0, 0, 1))

			if err := c.SendChannelData(0x4000, []byte("no permission")); err != nil {
				t.Fatal(err)
			}
			if got := peerGets(t, peer, 300*time.Millisecond); got != "nothing" {
				t.Errorf("the peer got %q without a permission", got)
			}
			if _, err := peer.WriteToUDPAddrPort([]byte("back without permission"), relay); err != nil {
				t.Fatal(err)
			}
			if got := clientGets(t, c, 300*time.Millisecond); got != "nothing" {
				t.Errorf("the client got %s without a permission", got)
			}

			s.onPermissionCreated(nil, nil, "", "", "", relayAddr, net.IPv4(127, 0, 0, 1))
			if err := c.SendChannelData(0x4000, []byte("permitted again")); err != nil {
				t.Fatal(err)
			}
			if got := peerGets(t, peer, 5*time.Second); got != "permitted again" {
				t.Errorf("the peer got %s, want the data once permitted again", got)
			}
		})
	}
}

// TestChannelPathAllocatesNothing checks that relaying a packet on a channel allocates no memory, either way.
func TestChannelPathAllocatesNothing(t *testing.T) {
	s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true })
	c, relay, peer := bindOne(t, s, "udp")
	rc := s.relayAt(net.UDPAddrFromAddrPort(relay))
	frame := turnclient.AppendChannelData(nil, 0x4000, make([]byte, 1200), false)
	buf := make([]byte, 1600)
	drain := make([]byte, 2048)
	allocs := testing.AllocsPerRun(200, func() {
		if !rc.fromClient(frame) {
			t.Fatal("the channel data path refused a frame on a bound channel")
		}
		if !rc.toClient(buf, 1200, 0x4000) {
			t.Fatal("the channel data path has no client")
		}
		_, _, _ = peer.ReadFromUDPAddrPort(drain)
		_ = c.Conn().SetReadDeadline(time.Now().Add(time.Second))
		_, _ = c.Conn().Read(drain)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet relayed both ways, want 0", allocs)
	}
}
