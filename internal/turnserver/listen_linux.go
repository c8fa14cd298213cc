package turnserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketBuffer is the receive and send buffer asked for on the UDP listening sockets and relay sockets, as coturn
// does: a burst of packets from many clients at once waits in the kernel instead of being dropped. The system
// grants it if its limit (net.core.rmem_max, wmem_max) allows, or the process may exceed that limit; otherwise
// the socket keeps what the limit allows.
const socketBuffer = 4 << 20

// relaySocketBuffer is the buffer asked for on each relay socket, up to the system's limit: a relay carries one
// client's media, a small share of what a listening socket carries.
const relaySocketBuffer = 1 << 20

// msgTrunc is the flag of a datagram cut short by the buffer it was read into.
const msgTrunc = unix.MSG_TRUNC

func setRelayBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(relaySocketBuffer)
	_ = c.SetWriteBuffer(relaySocketBuffer)
}

// listenUDP opens n UDP sockets on ip:port (port 0: a free one), all bound to the same port with SO_REUSEPORT,
// so that the kernel spreads the clients over them (a client's datagrams always reach the same socket) and as many
// goroutines read them. The first socket is bound without SO_REUSEPORT and gets it after: binding with it first
// could share a port some other socket of this user already holds with SO_REUSEPORT.
func listenUDP(ip netip.Addr, port, n int) ([]*net.UDPConn, error) {
	first, err := net.ListenUDP(udpNetwork(ip), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("turnserver: listening on UDP %v: %w", netip.AddrPortFrom(ip, uint16(port)), err)
	}
	conns := []*net.UDPConn{first}
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, c := range conns {
			_ = c.Close()
		}
		return nil, err
	}
	setBuffers(first)
	if n <= 1 {
		return conns, nil
	}
	if err := setReusePort(first); err != nil {
		return fail(err)
	}
	addr := first.LocalAddr().(*net.UDPAddr).AddrPort()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	for range n - 1 {
		pc, err := lc.ListenPacket(context.Background(), udpNetwork(ip), addr.String())
		if err != nil {
			return fail(fmt.Errorf("turnserver: listening on UDP %v again (SO_REUSEPORT): %w", addr, err))
		}
		c := pc.(*net.UDPConn)
		setBuffers(c)
		conns = append(conns, c)
	}
	return conns, nil
}

func setReusePort(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("turnserver: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return fmt.Errorf("turnserver: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("turnserver: SO_REUSEPORT: %w", serr)
	}
	return nil
}

// setBuffers asks for socketBuffer bytes of receive and send buffer: beyond the system's limit if the process
// may (SO_RCVBUFFORCE needs CAP_NET_ADMIN), else up to it. It is best effort: a smaller buffer only drops more
// under a burst.
func setBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuffer)
			}
		}
	})
}

// listenRawUDP is listenUDP for the loops: n raw non-blocking sockets on ip:port, bound together with
// SO_REUSEPORT, the first without it at first for the same reason.
func listenRawUDP(ip netip.Addr, port, n int) ([]*udpSocket, error) {
	first, err := openUDPSocket(ip, port, false, socketBuffer)
	if err != nil {
		return nil, err
	}
	socks := []*udpSocket{first}
	if n <= 1 {
		return socks, nil
	}
	fail := func(err error) ([]*udpSocket, error) {
		for _, s := range socks {
			_ = s.close()
		}
		return nil, err
	}
	if err := unix.SetsockoptInt(first.fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail(fmt.Errorf("turnserver: SO_REUSEPORT: %w", err))
	}
	for range n - 1 {
		s, err := openUDPSocket(ip, int(first.local.Port()), true, socketBuffer)
		if err != nil {
			return fail(fmt.Errorf("turnserver: listening on UDP %v again (SO_REUSEPORT): %w", first.local, err))
		}
		socks = append(socks, s)
	}
	return socks, nil
}
