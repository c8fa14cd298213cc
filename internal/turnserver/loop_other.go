//go:build !linux

package turnserver

import (
	"errors"
	"net/netip"
)

// Without Linux's epoll and recvmmsg there are no loops: every socket is one of Go's, read by pion's goroutines.

var errNoLoops = errors.New("turnserver: no data loops on this system")

type udpSocket struct{ local netip.AddrPort }

func (u *udpSocket) sendTo([]byte, netip.AddrPort) error { return errNoLoops }
func (u *udpSocket) close() error                        { return nil }

func openUDPSocket(netip.Addr, int, bool, int) (*udpSocket, error) { return nil, errNoLoops }
func listenRawUDP(netip.Addr, int, int) ([]*udpSocket, error)      { return nil, errNoLoops }

type dataLoop struct{ index int }

func startDataLoops(*Server, int) ([]*dataLoop, error) { return nil, nil }
func stopDataLoops([]*dataLoop)                        {}
func (l *dataLoop) add(loopItem) (uint32, error)       { return 0, errNoLoops }
func (l *dataLoop) remove(uint32, *udpSocket)          {}
