//go:build !linux

package turnserver

import (
	"fmt"
	"net"
	"net/netip"
)

const (
	socketBuffer      = 4 << 20
	relaySocketBuffer = 1 << 20
	msgTrunc          = 0 // truncated datagrams are not told apart here
)

func setRelayBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(relaySocketBuffer)
	_ = c.SetWriteBuffer(relaySocketBuffer)
}

// listenUDP opens one UDP socket on ip:port (port 0: a free one); SO_REUSEPORT's spreading is used on Linux only.
func listenUDP(ip netip.Addr, port, _ int) ([]*net.UDPConn, error) {
	c, err := net.ListenUDP(udpNetwork(ip), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("turnserver: listening on UDP %v: %w", netip.AddrPortFrom(ip, uint16(port)), err)
	}
	setBuffers(c)
	return []*net.UDPConn{c}, nil
}

func setBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
}
