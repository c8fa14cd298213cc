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
	"time"

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
	open       *atomic.Int64 // relay sockets open, to fail at once when they fill the port range (shared by an endpoint's generators)
	// loops serve the relay sockets of UDP and plain TCP clients (loop_linux.go); nil: the sockets are Go's, each
	// read by a goroutine of pion's (TLS clients, whose ChannelData is encrypted on its way to their connection,
	// and systems without the loops).
	loops []*dataLoop
	next  atomic.Uint32 // spreads the relays over the loops
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
	var raw *udpSocket
	listen := func(port int) (net.PacketConn, error) {
		if g.loops != nil {
			var err error
			raw, err = openUDPSocket(g.bind, port, false, relaySocketBuffer)
			return nil, err
		}
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
	rc := &relayConn{s: g.s, g: g}
	if raw != nil {
		rc.raw = raw
		rc.in = make(chan *pionPacket, relayQueue)
		rc.done = make(chan struct{})
		rc.loop = g.loops[int(g.next.Add(1))%len(g.loops)]
		rc.addr = netip.AddrPortFrom(g.advertised, raw.local.Port())
	} else {
		rc.PacketConn = conn
		rc.addr = netip.AddrPortFrom(g.advertised, uint16(conn.LocalAddr().(*net.UDPAddr).Port))
		if u, ok := conn.(*net.UDPConn); ok {
			rc.udp = u
			setRelayBuffers(u)
		}
	}
	g.open.Add(1)
	g.s.addRelay(rc.addr, rc)
	if raw != nil {
		token, err := rc.loop.add(loopItem{sock: raw, relay: rc})
		if err != nil {
			_ = rc.Close()
			return nil, nil, err
		}
		rc.token = token
	}
	return rc, net.UDPAddrFromAddrPort(rc.addr), nil
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelay
}

// relayConn is a relay socket. It relays its allocation's channel data itself (channels.go), counts the bytes
// relayed, and refuses to send to a denied peer even if pion granted a permission (a second line of defence): the
// only denied addresses it sends to are the relay addresses of this server's own live allocations, so that two
// clients on a LAN can talk relay to relay.
type relayConn struct {
	net.PacketConn                  // the socket, when it is one of Go's; nil when a loop serves it
	udp            *net.UDPConn     // the same socket, for the channel data path
	raw            *udpSocket       // the socket, when a loop serves it (loop_linux.go)
	loop           *dataLoop        // that loop
	token          uint32           // the socket's token in the loop
	in             chan *pionPacket // what the loop hands to pion
	done           chan struct{}    // closed by Close, with a loop
	s              *Server
	g              *relayGenerator
	addr           netip.AddrPort
	closeOnce      sync.Once

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
	var (
		n   int
		err error
	)
	if c.raw != nil {
		if err = c.raw.sendTo(p, ap); err == nil {
			n = len(p)
		}
	} else {
		n, err = c.PacketConn.WriteTo(p, to)
	}
	c.s.metrics.toPeer.Add(float64(n))
	return n, err
}

// loopItem is a socket in a loop's epoll set: a listening socket (listen), a relay socket (relay), or a plain TCP
// connection (tcp).
type loopItem struct {
	sock   *udpSocket
	listen *packetConn
	relay  *relayConn
	tcp    *tcpLoopConn
}

// pionPacket is a datagram a loop hands to pion, and where it came from. They are recycled (two pools: STUN
// requests are small, a peer's datagrams may not be), so that what goes to pion makes no garbage, and a burst of
// small requests waiting in a queue holds small buffers.
type pionPacket struct {
	b    []byte // the datagram, in buf
	from netip.AddrPort
	buf  []byte
	pool *sync.Pool
}

const (
	// pionPacketSize is the longest datagram handed to pion: what its read buffers hold (1,600 bytes; the loops
	// drop longer ones, as pion would).
	pionPacketSize = 1600
	// smallPionPacket is the size of the small packets' buffers: a STUN request of a browser fits.
	smallPionPacket = 512
)

var (
	smallPackets = sync.Pool{New: func() any { return &pionPacket{buf: make([]byte, smallPionPacket)} }}
	largePackets = sync.Pool{New: func() any { return &pionPacket{buf: make([]byte, pionPacketSize)} }}
)

// newPionPacket returns a recycled packet holding a copy of b, from from.
func newPionPacket(b []byte, from netip.AddrPort) *pionPacket {
	pool := &smallPackets
	if len(b) > smallPionPacket {
		pool = &largePackets
	}
	pkt := pool.Get().(*pionPacket)
	pkt.pool, pkt.from = pool, from
	pkt.b = pkt.buf[:copy(pkt.buf, b)]
	return pkt
}

// take copies the datagram into p, gives the packet back to its pool, and returns its length and sender.
func (pkt *pionPacket) take(p []byte) (int, netip.AddrPort) {
	n, from := copy(p, pkt.b), pkt.from
	pkt.pool.Put(pkt)
	return n, from
}

const (
	// relayQueue is the most datagrams from peers without a channel waiting for pion on a relay socket served by
	// a loop (for Data indications); more are dropped. Small: every allocation has its queue.
	relayQueue = 8
	// listenQueue is the most datagrams from clients waiting for pion (STUN requests, Send indications) on a
	// listening socket served by a loop; more are dropped.
	listenQueue = 1024
)

// queue hands a copy of b, from from, to pion's goroutine for the relay socket; it is dropped if pion is that
// far behind.
func (c *relayConn) queue(b []byte, from netip.AddrPort) { queuePacket(c.in, b, from) }

// queuePacket puts a copy of b, from from, on in, unless in is full: then it is dropped.
func queuePacket(in chan *pionPacket, b []byte, from netip.AddrPort) {
	if len(in) == cap(in) {
		return
	}
	pkt := newPionPacket(b, from)
	select {
	case in <- pkt:
	default:
		pkt.pool.Put(pkt)
	}
}

func (c *relayConn) LocalAddr() net.Addr {
	if c.raw != nil {
		return net.UDPAddrFromAddrPort(c.raw.local)
	}
	return c.PacketConn.LocalAddr()
}

func (c *relayConn) SetDeadline(t time.Time) error {
	if c.raw != nil {
		return nil
	}
	return c.PacketConn.SetDeadline(t)
}

func (c *relayConn) SetReadDeadline(t time.Time) error {
	if c.raw != nil {
		return nil
	}
	return c.PacketConn.SetReadDeadline(t)
}

func (c *relayConn) SetWriteDeadline(t time.Time) error {
	if c.raw != nil {
		return nil
	}
	return c.PacketConn.SetWriteDeadline(t)
}

// sendToPeer sends b to peer from the relay socket.
func (c *relayConn) sendToPeer(b []byte, peer netip.AddrPort) int {
	if c.raw != nil {
		if c.raw.sendTo(b, peer) != nil {
			return 0
		}
		return len(b)
	}
	n, _ := c.udp.WriteToUDPAddrPort(b, peer)
	return n
}

// ReadFrom is read by pion's goroutine for the relay socket. It relays a datagram from a peer with a channel to
// the client itself, reading it into p behind room for the ChannelData header, and returns only the others to
// pion (for a Data indication, or to be dropped): with a channel, a peer's datagram never leaves this loop.
// A datagram too long to fit with the header in p (more than 1,596 bytes in pion's buffer) is dropped.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.raw != nil {
		select {
		case pkt := <-c.in:
			n, from := pkt.take(p)
			return n, net.UDPAddrFromAddrPort(from), nil
		case <-c.done:
			return 0, nil, fmt.Errorf("turnserver: relay socket: %w", net.ErrClosed)
		}
	}
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
		if c.raw != nil {
			close(c.done)
			c.loop.remove(c.token, c.raw)
		}
	})
	if c.raw != nil {
		return c.raw.close()
	}
	return c.PacketConn.Close()
}

// packetConn wraps a UDP listener for pion. It answers an Allocate request that asks for an even port or a reserved
// one (EVEN-PORT, RESERVATION-TOKEN) with 420 (Unknown Attribute) itself: pion would first open and close up to
// 128 relay sockets looking for an even port, in the read loop that every UDP client of the listener waits on.
// Every other datagram goes to pion untouched; the test costs two byte comparisons.
type packetConn struct {
	net.PacketConn // the socket, when it is one of Go's; nil when a loop serves it
	udp            *net.UDPConn
	sock           *udpSocket       // the socket, when a loop serves it (loop_linux.go)
	loop           *dataLoop        // that loop
	token          uint32           // the socket's token in the loop
	in             chan *pionPacket // what the loop hands to pion
	done           chan struct{}    // closed by Close, with a loop
	closeOnce      sync.Once
	local          netip.AddrPort
	s              *Server
}

func newPacketConn(s *Server, c *net.UDPConn) *packetConn {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return &packetConn{PacketConn: c, udp: c, local: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), s: s}
}

// newLoopPacketConn makes a listening socket served by loop.
func newLoopPacketConn(s *Server, sock *udpSocket, loop *dataLoop) (*packetConn, error) {
	c := &packetConn{
		sock: sock, loop: loop, in: make(chan *pionPacket, listenQueue), done: make(chan struct{}), s: s,
		local: netip.AddrPortFrom(sock.local.Addr().Unmap(), sock.local.Port()),
	}
	token, err := loop.add(loopItem{sock: sock, listen: c})
	if err != nil {
		return nil, err
	}
	c.token = token
	return c, nil
}

// queue hands a copy of b, from from, to pion's read loop; it is dropped if pion is that far behind.
func (c *packetConn) queue(b []byte, from netip.AddrPort) { queuePacket(c.in, b, from) }

func (c *packetConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if c.sock == nil {
		return c.PacketConn.WriteTo(p, to)
	}
	ua, ok := to.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("turnserver: %v is not a UDP address", to)
	}
	if err := c.sock.sendTo(p, ua.AddrPort()); err != nil {
		return 0, fmt.Errorf("turnserver: sending to %v: %w", to, err)
	}
	return len(p), nil
}

func (c *packetConn) Close() error {
	if c.sock == nil {
		return c.PacketConn.Close()
	}
	c.closeOnce.Do(func() {
		close(c.done)
		c.loop.remove(c.token, c.sock)
	})
	return c.sock.close()
}

func (c *packetConn) LocalAddr() net.Addr {
	if c.sock != nil {
		return net.UDPAddrFromAddrPort(c.sock.local)
	}
	return c.PacketConn.LocalAddr()
}

func (c *packetConn) SetDeadline(t time.Time) error {
	if c.sock != nil {
		return nil
	}
	return c.PacketConn.SetDeadline(t)
}

func (c *packetConn) SetReadDeadline(t time.Time) error {
	if c.sock != nil {
		return nil
	}
	return c.PacketConn.SetReadDeadline(t)
}

func (c *packetConn) SetWriteDeadline(t time.Time) error {
	if c.sock != nil {
		return nil
	}
	return c.PacketConn.SetWriteDeadline(t)
}

// next returns the next datagram for pion: from the loop's queue, or read from the socket, channel data relayed
// on the way.
func (c *packetConn) next(p []byte) (int, netip.AddrPort, error) {
	if c.sock != nil {
		select {
		case pkt := <-c.in:
			n, from := pkt.take(p)
			return n, from, nil
		case <-c.done:
			return 0, netip.AddrPort{}, fmt.Errorf("turnserver: listening socket: %w", net.ErrClosed)
		}
	}
	for {
		n, src, err := c.udp.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, src, err
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if n < len(p) && isChannelData(p[:n]) && c.s.channelPath {
			if rc := c.s.udpRelayOf(c.local, src); rc != nil && rc.fromClient(p[:n]) {
				continue
			}
		}
		return n, src, nil
	}
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
		n, src, err := c.next(p)
		if err != nil {
			return n, nil, err
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
			_, _ = c.WriteTo(resp.Raw, from)
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
