//go:build !linux

package ws

import (
	"errors"
	"net"
)

var errNoEpoll = errors.New("ws: epoll is not available")

var errAgain = errors.New("ws: would block")

// poller is only on Linux; elsewhere every connection is served by goroutines.
type poller struct{}

func newPoller(*Server) (*poller, error)      { return nil, errNoEpoll }
func (*poller) add(*Conn) error               { return errNoEpoll }
func (*poller) remove(*Conn)                  {}
func (*poller) watchWrite(*Conn, bool)        {}
func (*poller) wake()                         {}
func (*poller) reap(*Conn)                    {}
func (*poller) resume(*Conn)                  {}
func (*poller) close()                        {}
func (*poller) run()                          {}
func (*poller) isParked() bool                { return false }
func detach(*net.TCPConn) (int, error)        { return -1, errNoEpoll }
func writev(int, []byte, []byte) (int, error) { return 0, errNoEpoll }
func write(int, []byte) (int, error)          { return 0, errNoEpoll }
func shutdown(int)                            {}
func shutdownWrite(int)                       {}
func closeFD(int)                             {}
