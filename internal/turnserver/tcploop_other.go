//go:build !linux

package turnserver

import (
	"net"
	"time"
)

// Without the loops, TCP connections are read and written by goroutines (tcploop_linux.go).

type tcpLoopConn struct{}

func (c *trackedConn) attachLoop(*net.TCPConn, *dataLoop, time.Time) error { return errNoLoops }
func (lc *tcpLoopConn) writeMedia([]byte)                                  {}
func (lc *tcpLoopConn) write([]byte) (int, error)                          { return 0, errNoLoops }
func (lc *tcpLoopConn) read([]byte) (int, error)                           { return 0, errNoLoops }
func (lc *tcpLoopConn) setDeadline(time.Time)                              {}
func (lc *tcpLoopConn) close()                                             {}
