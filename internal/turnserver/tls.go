package turnserver

import (
	"net"
	"net/netip"
	"sync"
)

// TURN over TLS (RFC 7065: turns: URLs) is TURN over TCP inside a TLS connection: the same STUN messages and
// ChannelData frames, framed the same way. It is what gets a relay to a client on a network that lets only
// HTTPS out. A Server with Config.TLS serves it on a port of its own (Config.TLSAddr, 5349 by default in the
// command), and on connections an HTTPS listener hands it (HandOff), so that one port, 443, serves the web client
// and TURN alike. Either way the connection is a trackedConn like a TCP one: the same caps, idle timeout, framing
// checks and channel data path, with the TLS layer in between.

// ALPNProtocol is the ALPN protocol id of TURN (and STUN) over TLS (RFC 7443).
const ALPNProtocol = "stun.turn"

// handoff is where HandOff puts the connections whose local address is listen.
type handoff struct {
	listen netip.Addr
	l      *handoffListener
}

// handoffListener is a net.Listener whose connections come from HandOff, for pion's accept loop.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(ip netip.Addr, port int) *handoffListener {
	return &handoffListener{
		addr:  &handoffAddr{at: netip.AddrPortFrom(ip, uint16(port))},
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
}

// handoffAddr is a handoffListener's address: the TURN endpoint it relays for.
type handoffAddr struct{ at netip.AddrPort }

func (a *handoffAddr) Network() string { return "handoff" }
func (a *handoffAddr) String() string  { return a.at.String() }

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// put gives c to the listener's accept loop, or closes it if the listener is closed.
func (l *handoffListener) put(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// HandOff gives the server a TURN-over-TLS connection accepted elsewhere, its TLS handshake done, such as one
// that an HTTPS listener on port 443 found to carry STUN rather than HTTP (by ALPN, or by its first bytes, which
// c must still return). The server owns c from then on: it serves it as a connection to its own TLS port, with
// the same limits, relaying from the address c was accepted on (or another of the same family), and closes it.
// Without Config.TLS, before Start and after Close, HandOff closes c.
func (s *Server) HandOff(c net.Conn) {
	local := addrPortOf(c.LocalAddr()).Addr()
	s.mu.Lock()
	routes, running := s.handoffs, s.started && !s.closed
	s.mu.Unlock()
	var to *handoffListener
	for _, r := range routes {
		switch {
		case r.listen == local:
			to = r.l
		case to == nil && r.listen.Is4() == local.Is4():
			to = r.l // the IPv4 wildcard, or another address of the same family
		}
	}
	if !running || to == nil {
		s.cfg.Logger.Debug("TURN over TLS: a connection handed over with nowhere to go", "client", c.RemoteAddr(), "local", local)
		_ = c.Close()
		return
	}
	to.put(c)
}

// permit is the PermissionHandler of the listeners of g: the server's policy (Server.permit), and a peer of the
// relay's address family.
func (g *relayGenerator) permit(client net.Addr, peer net.IP) bool {
	return g.s.permit(client, peer, g.bind.Is4())
}
