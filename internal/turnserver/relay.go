package turnserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v3"
)

var (
	errPeerDenied    = errors.New("turnserver: peer address denied")
	errNoRelayPort   = errors.New("turnserver: no free relay port")
	errTCPRelay      = errors.New("turnserver: TCP relays (RFC 6062) are not supported")
	errPortRequested = errors.New("turnserver: a requested relay port (EVEN-PORT) is not supported")
)

// maxPortTries bounds the ports tried for one allocation in a relay port range.
const maxPortTries = 256

// relayGenerator makes the relay sockets of one listener: bound to bind, advertised as advertised, in the
// server's relay port range. It implements turn.RelayAddressGenerator.
type relayGenerator struct {
	s          *Server
	bind       netip.Addr
	advertised netip.Addr
	open       atomic.Int64 // relay sockets open, to fail at once when they fill the port range
}

func (g *relayGenerator) Validate() error {
	if !g.bind.IsValid() || !g.advertised.IsValid() || g.advertised.Is4() != g.bind.Is4() {
		return fmt.Errorf("turnserver: bad relay addresses %v, %v", g.bind, g.advertised)
	}
	return nil
}

// AllocatePacketConn opens a relay socket of the family of g's addresses: pion always asks for "udp4", and does
// not read REQUESTED-ADDRESS-FAMILY, so a client gets a relay of the family of the address it reached.
func (g *relayGenerator) AllocatePacketConn(_ string, requestedPort int) (net.PacketConn, net.Addr, error) {
	lo, hi := int(g.s.cfg.RelayMinPort), int(g.s.cfg.RelayMaxPort)
	var lc net.ListenConfig
	network := udpNetwork(g.bind)
	listen := func(port int) (net.PacketConn, error) {
		return lc.ListenPacket(context.Background(), network, net.JoinHostPort(g.bind.String(), strconv.Itoa(port)))
	}
	var (
		conn net.PacketConn
		err  error
	)
	switch {
	case requestedPort != 0:
		// Only EVEN-PORT asks for a port, and pion keeps a reservation for each (an unbounded list, scanned under
		// the lock every relayed packet takes): refused, as browsers never ask.
		return nil, nil, fmt.Errorf("%w: %d", errPortRequested, requestedPort)
	case lo == 0:
		conn, err = listen(0)
	default:
		n := hi - lo + 1
		if g.open.Load() >= int64(n) {
			return nil, nil, fmt.Errorf("turnserver: opening a relay socket: %w", errNoRelayPort)
		}
		start := rand.IntN(n)
		err = errNoRelayPort
		for i := 0; i < n && i < maxPortTries; i++ {
			if conn, err = listen(lo + (start+i)%n); err == nil {
				break
			}
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("turnserver: opening a relay socket: %w", err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	addr := netip.AddrPortFrom(g.advertised, uint16(port))
	rc := &relayConn{PacketConn: conn, s: g.s, g: g, addr: addr}
	if u, ok := conn.(*net.UDPConn); ok {
		rc.udp = u
		setRelayBuffers(u)
	}
	g.open.Add(1)
	g.s.addRelay(addr, rc)
	return rc, net.UDPAddrFromAddrPort(addr), nil
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelay
}

// relayConn is a relay socket. It relays its allocation's channel data itself (channels.go), counts the bytes
// relayed, and refuses to send to a denied peer even if pion granted a permission (a second line of defence): the
// only denied addresses it sends to are the relay addresses of this server's own live allocations, so that two
// clients on a LAN can talk relay to relay.
type relayConn struct {
	net.PacketConn
	udp       *net.UDPConn // the same socket, for the channel data path
	s         *Server
	g         *relayGenerator
	addr      netip.AddrPort
	closeOnce sync.Once

	link      atomic.Pointer[clientLink]   // how to reach the client; nil until the allocation is made, and after
	routes    atomic.Pointer[channelTable] // the allocation's channels; nil: none yet
	ch        channelState
	clientKey udpClient // set with link, for a UDP client; guarded by Server.cmu
	unlinked  bool      // the relay has closed: link no more; guarded by Server.cmu

	channelPackets atomic.Uint64 // packets relayed by the channel data path, both ways (for tests)
}

func (c *relayConn) WriteTo(p []byte, to net.Addr) (int, error) {
	ua, ok := to.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("%w: %v is not a UDP address", errPeerDenied, to)
	}
	ap := ua.AddrPort()
	if !c.s.mayRelayTo(ap) {
		c.s.metrics.deniedPeers.Inc()
		return 0, fmt.Errorf("%w: %v", errPeerDenied, ap)
	}
	n, err := c.PacketConn.WriteTo(p, to)
	c.s.metrics.toPeer.Add(float64(n))
	return n, err
}

// ReadFrom is read by pion's goroutine for the relay socket. It relays a datagram from a peer with a channel to
// the client itself, reading it into p behind room for the ChannelData header, and returns only the others to
// pion (for a Data indication, or to be dropped): with a channel, a peer's datagram never leaves this loop.
// A datagram too long to fit with the header in p (more than 1,596 bytes in pion's buffer) is dropped.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.udp == nil || !c.s.channelPath || len(p) <= channelHeader {
		n, from, err := c.PacketConn.ReadFrom(p)
		c.s.metrics.fromPeer.Add(float64(n))
		return n, from, err
	}
	for {
		n, _, flags, from, err := c.udp.ReadMsgUDPAddrPort(p[channelHeader:], nil)
		if err != nil {
			return 0, nil, err
		}
		c.s.metrics.fromPeer.Add(float64(n))
		if flags&msgTrunc != 0 {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if t := c.routes.Load(); t != nil {
			if r, ok := t.byPeer(from); ok {
				if r.toClient == dropNoPerm || c.toClient(p, n, r.number) {
					continue
				}
			}
		}
		copy(p, p[channelHeader:channelHeader+n])
		return n, net.UDPAddrFromAddrPort(from), nil
	}
}

func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		c.g.open.Add(-1)
		c.s.removeRelay(c.addr)
		c.s.unlinkClient(c)
	})
	return c.PacketConn.Close()
}

// packetConn wraps a UDP listener for pion. It answers an Allocate request that asks for an even port or a reserved
// one (EVEN-PORT, RESERVATION-TOKEN) with 420 (Unknown Attribute) itself: pion would first open and close up to
// 128 relay sockets looking for an even port, in the read loop that every UDP client of the listener waits on.
// Every other datagram goes to pion untouched; the test costs two byte comparisons.
type packetConn struct {
	net.PacketConn
	udp   *net.UDPConn
	local netip.AddrPort
	s     *Server
}

func newPacketConn(s *Server, c *net.UDPConn) *packetConn {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return &packetConn{PacketConn: c, udp: c, local: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), s: s}
}

const (
	stunHeaderSize       = 20
	attrEvenPort         = 0x0018
	attrReservationToken = 0x0022
)

// ReadFrom is read by pion's goroutine for the listening socket. It relays a client's ChannelData on a channel
// tandem knows to the peer itself (channels.go), and returns everything else to pion. A datagram that fills p
// may have been cut short, and goes to pion, which drops it.
func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, src, err := c.udp.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, nil, err
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if n < len(p) && isChannelData(p[:n]) && c.s.channelPath {
			if rc := c.s.udpRelayOf(c.local, src); rc != nil && rc.fromClient(p[:n]) {
				continue
			}
		}
		from := net.UDPAddrFromAddrPort(src)
		if n < stunHeaderSize || p[0] != 0x00 || p[1] != 0x03 { // not an Allocate request
			return n, from, nil
		}
		attr, ok := reservationAttr(p[:n])
		if !ok {
			return n, from, nil
		}
		c.s.limited(limitEvenPort, from, "")
		var id [stun.TransactionIDSize]byte
		copy(id[:], p[8:stunHeaderSize])
		resp, err := stun.Build(&stun.Message{TransactionID: id},
			stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
			stun.CodeUnknownAttribute, &stun.UnknownAttributes{stun.AttrType(attr)})
		if err == nil {
			_, _ = c.udp.WriteToUDPAddrPort(resp.Raw, src)
		}
	}
}

// reservationAttr finds an EVEN-PORT or RESERVATION-TOKEN attribute in the STUN message m.
func reservationAttr(m []byte) (uint16, bool) {
	for off := stunHeaderSize; off+4 <= len(m); {
		typ := binary.BigEndian.Uint16(m[off:])
		if typ == attrEvenPort || typ == attrReservationToken {
			return typ, true
		}
		off += 4 + (int(binary.BigEndian.Uint16(m[off+2:]))+3)&^3
	}
	return 0, false
}
