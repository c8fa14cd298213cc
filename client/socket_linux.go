package client

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpSocket reads and writes a TCP connection with recvfrom and sendto, which skip the file layer that read and
// write pass through, and without the scheduler's system-call bookkeeping: the socket is non-blocking, so a call
// never waits. The load generator makes a million of these calls a minute.
type tcpSocket struct {
	rc syscall.RawConn

	// The arguments and results of the call in progress, so that the functions given to rc are made once.
	rbuf, wbuf     []byte
	rn, wn         int
	rerr, werr     error
	readFn, sendFn func(fd uintptr) bool
	tryFn          func(fd uintptr)
}

// socket returns the fastest way to read and write nc: nc itself unless it is a TCP connection.
func socket(nc net.Conn) io.ReadWriter {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	s := &tcpSocket{rc: rc}
	s.readFn, s.sendFn, s.tryFn = s.recv, s.send, s.tryRecv
	return s
}

// Read reads into p, waiting for the socket to be readable.
func (s *tcpSocket) Read(p []byte) (int, error) { return s.read(p, false) }

// tryRead reads into p what has arrived, or returns errWouldBlock.
func (s *tcpSocket) tryRead(p []byte) (int, error) { return s.read(p, true) }

// read reads into p with recvfrom; c.rmu is held, so only one read runs at a time.
func (s *tcpSocket) read(p []byte, try bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf = p
	var err error
	if try {
		err = s.rc.Control(s.tryFn) // runs tryRecv at once, whatever the socket's state
	} else {
		err = s.rc.Read(s.readFn) // waits for the socket to be readable while recv returns false
	}
	n, rerr := s.rn, s.rerr
	s.rbuf, s.rerr = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *tcpSocket) recv(fd uintptr) bool {
	var ok bool
	s.rn, ok, s.rerr = call(unix.SYS_RECVFROM, fd, s.rbuf, unix.MSG_DONTWAIT, "read")
	return ok
}

func (s *tcpSocket) tryRecv(fd uintptr) {
	if !s.recv(fd) {
		s.rn, s.rerr = 0, errWouldBlock
	}
}

// Write writes all of p; c.wmu is held, so only one Write runs at a time.
func (s *tcpSocket) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		s.wbuf = p[written:]
		err := s.rc.Write(s.sendFn) // waits for room in the socket while send returns false
		n, werr := s.wn, s.werr
		s.wbuf, s.wn, s.werr = nil, 0, nil
		written += n
		if err != nil {
			return written, err
		}
		if werr != nil {
			return written, werr
		}
	}
	return written, nil
}

func (s *tcpSocket) send(fd uintptr) bool {
	var ok bool
	s.wn, ok, s.werr = call(unix.SYS_SENDTO, fd, s.wbuf, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, "write")
	return ok
}

// call makes recvfrom or sendto (trap) on fd with b, again if a signal interrupted it; ok is false when the
// socket is not ready (EAGAIN), and err is the call's failure as op.
func call(trap, fd uintptr, b []byte, flags uintptr, op string) (n int, ok bool, err error) {
	for {
		r, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), flags, 0, 0)
		switch e {
		case 0:
			return int(r), true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, false, nil
		}
		return 0, true, &net.OpError{Op: op, Net: "tcp", Err: e}
	}
}
