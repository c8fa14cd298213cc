//go:build !linux

package ws

import "net"

// door is only on Linux, where the epoll loops are.
type door struct{}

func (*door) Close() error { return nil }

// Listen returns ln: without epoll loops, net/http sees every connection.
func (s *Server) Listen(ln net.Listener, accept Acceptor) (net.Listener, error) { return ln, nil }

func (c *Conn) onRequest([]byte) bool { return false }

func tcpConn(nc net.Conn) (*net.TCPConn, bool) {
	t, ok := nc.(*net.TCPConn)
	return t, ok
}
