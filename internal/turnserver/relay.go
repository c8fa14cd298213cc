package turnserver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

var (
	errPeerDenied   = errors.New("turnserver: peer address denied")
	errNoRelayPort  = errors.New("turnserver: no free relay port")
	errTCPRelay     = errors.New("turnserver: TCP relays (RFC 6062) are not supported")
	errPortOutRange = errors.New("turnserver: requested relay port outside the relay port range")
)

// maxPortTries bounds the ports tried for one allocation in a relay port range.
const maxPortTries = 256

// relayGenerator makes the relay sockets of one listener: bound to bind, advertised as advertised, in the
// server's relay port range. It implements turn.RelayAddressGenerator.
type relayGenerator struct {
	s          *Server
	bind       netip.Addr
	advertised netip.Addr
}

func (g *relayGenerator) Validate() error {
	if !g.bind.IsValid() || !g.advertised.Is4() {
		return fmt.Errorf("turnserver: bad relay addresses %v, %v", g.bind, g.advertised)
	}
	return nil
}

func (g *relayGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	lo, hi := int(g.s.cfg.RelayMinPort), int(g.s.cfg.RelayMaxPort)
	var lc net.ListenConfig
	listen := func(port int) (net.PacketConn, error) {
		return lc.ListenPacket(context.Background(), network, net.JoinHostPort(g.bind.String(), strconv.Itoa(port)))
	}
	var (
		conn net.PacketConn
		err  error
	)
	switch {
	case requestedPort != 0:
		if lo != 0 && (requestedPort < lo || requestedPort > hi) {
			return nil, nil, fmt.Errorf("%w: %d", errPortOutRange, requestedPort)
		}
		conn, err = listen(requestedPort)
	case lo == 0:
		conn, err = listen(0)
	default:
		n := hi - lo + 1
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
	rc := &relayConn{PacketConn: conn, s: g.s, addr: addr}
	g.s.addRelay(addr)
	return rc, net.UDPAddrFromAddrPort(addr), nil
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelay
}

// relayConn is a relay socket. It counts the bytes relayed, and refuses to send to a denied peer even if pion
// granted a permission (a second line of defence): the only denied addresses it sends to are the relay addresses
// of this server's own live allocations, so that two clients on a LAN can talk relay to relay.
type relayConn struct {
	net.PacketConn
	s         *Server
	addr      netip.AddrPort
	closeOnce sync.Once
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

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(p)
	c.s.metrics.fromPeer.Add(float64(n))
	return n, from, err
}

func (c *relayConn) Close() error {
	c.closeOnce.Do(func() { c.s.removeRelay(c.addr) })
	return c.PacketConn.Close()
}
