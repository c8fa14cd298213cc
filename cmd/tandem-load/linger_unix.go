//go:build unix

package main

import (
	"syscall"

	"tandem/client"
)

// resetClient closes c with a TCP reset (SO_LINGER 0) instead of a FIN: what a crashing device or a middlebox
// does to a connection. A connection without a socket of its own (wss://) is closed at once instead.
func resetClient(c *client.Client) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
		})
	}
	_ = c.CloseNow()
}
