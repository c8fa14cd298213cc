//go:build !linux

package turnserver

import "net"

// Without the loops, TCP connections are written by pion's goroutines (tcpwrite_linux.go).

type tcpWriter struct{}

func (c *trackedConn) attachWriter(*net.TCPConn, *dataLoop) error { return errNoLoops }
func (w *tcpWriter) writeMedia([]byte)                            {}
func (w *tcpWriter) write(p []byte) (int, error)                  { return 0, errNoLoops }
func (w *tcpWriter) close()                                       {}
