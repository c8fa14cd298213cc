package turnserver

import (
	"fmt"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Writes to plain TCP connections (Linux).
//
// The loops relay a peer's datagram to a TCP client themselves: they write the ChannelData frame to the client's
// connection. A loop must never block, and a TCP write may (a client that stops reading fills its receive window,
// then the server's send buffer), so the loops write with non-blocking system calls on the connection's
// descriptor. What the socket does not take waits in a bounded backlog of the connection's, written when the
// socket reports room (EPOLLOUT, in the loop's epoll set for as long as there is a backlog); a frame that does
// not fit in the backlog is dropped whole, as a router drops what it cannot queue (the client sees a lost
// packet, as over UDP). pion's own messages (STUN responses, Data indications) go through the same writer, so
// that the two never interleave inside a frame; pion's goroutine waits for room instead of dropping them.
// TLS connections are written as before, by pion's goroutines.

// tcpBacklog is the most bytes waiting in a TCP connection's backlog, beyond what its socket's send buffer holds:
// about 13 frames of 1,200-byte media.
const tcpBacklog = 16 << 10

// tcpWriter writes a plain TCP connection's descriptor without blocking.
type tcpWriter struct {
	fd    int // the connection's descriptor; valid while !closed (only trackedConn.Close closes it, after close)
	loop  *dataLoop
	token uint32

	mu      sync.Mutex // guards what follows: held only around non-blocking system calls and copies
	closed  bool
	broken  bool   // a write failed (reset, or shut down): what follows is dropped; the reader sees the end
	armed   bool   // the descriptor is in the loop's epoll set, for EPOLLOUT
	backlog []byte // bytes the socket did not take yet, at most tcpBacklog (plus the tail of a frame begun)
	dropped uint64 // media frames dropped for a full backlog (for tests)

	room   chan struct{} // signalled when the backlog shrinks, for pion's writes waiting
	closeC chan struct{} // closed by close
}

// attachWriter makes the loops write c, a plain TCP connection, through a tcpWriter registered with loop.
func (c *trackedConn) attachWriter(tcp *net.TCPConn, loop *dataLoop) error {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return fmt.Errorf("turnserver: TCP connection: %w", err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return fmt.Errorf("turnserver: TCP connection: %w", err)
	}
	w := &tcpWriter{fd: fd, loop: loop, room: make(chan struct{}, 1), closeC: make(chan struct{})}
	w.token = loop.register(loopItem{tcp: w})
	c.w = w
	return nil
}

// send writes b to the socket without blocking, and returns how much it took: 0 when its send buffer is full.
// w.mu is held.
func (w *tcpWriter) send(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(w.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, e
		}
	}
}

// writeMedia writes a ChannelData frame, or queues it, or drops it: it never blocks.
func (w *tcpWriter) writeMedia(frame []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.broken {
		return
	}
	if len(w.backlog) > 0 {
		if len(w.backlog)+len(frame) > tcpBacklog {
			w.dropped++
			return
		}
		w.backlog = append(w.backlog, frame...)
		return
	}
	n, err := w.send(frame)
	if err != nil {
		w.broken = true
		return
	}
	if n < len(frame) {
		w.queueLocked(frame[n:])
	}
}

// queueLocked puts b, the rest of a frame the socket took part of or a whole one, in the empty backlog, and
// asks the loop for EPOLLOUT.
func (w *tcpWriter) queueLocked(b []byte) {
	if w.backlog == nil {
		w.backlog = make([]byte, 0, tcpBacklog+maxTCPFrame)
	}
	w.backlog = append(w.backlog, b...)
	if !w.armed {
		if err := w.loop.watchWritable(w.fd, w.token, true); err != nil {
			w.broken, w.backlog = true, w.backlog[:0]
			return
		}
		w.armed = true
	}
}

// write is pion's write of one message: written, or queued whole; when the backlog is full, it waits for room.
func (w *tcpWriter) write(p []byte) (int, error) {
	for {
		w.mu.Lock()
		switch {
		case w.closed:
			w.mu.Unlock()
			return 0, fmt.Errorf("turnserver: TCP connection: %w", net.ErrClosed)
		case w.broken:
			w.mu.Unlock()
			return 0, fmt.Errorf("turnserver: TCP connection: %w", unix.EPIPE)
		case len(w.backlog) == 0:
			n, err := w.send(p)
			if err != nil {
				w.broken = true
				w.mu.Unlock()
				return 0, fmt.Errorf("turnserver: TCP connection: %w", err)
			}
			if n < len(p) {
				w.queueLocked(p[n:])
			}
			w.mu.Unlock()
			return len(p), nil
		case len(w.backlog)+len(p) <= tcpBacklog:
			w.backlog = append(w.backlog, p...)
			w.mu.Unlock()
			return len(p), nil
		}
		w.mu.Unlock()
		select {
		case <-w.room:
		case <-w.closeC:
		}
	}
}

// writable is called by the loop when the socket has room: it writes what it can of the backlog.
func (w *tcpWriter) writable() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	n, err := w.send(w.backlog)
	if err != nil {
		w.broken = true
		n = len(w.backlog)
	}
	w.backlog = w.backlog[:copy(w.backlog, w.backlog[n:])]
	if len(w.backlog) == 0 && w.armed {
		_ = w.loop.watchWritable(w.fd, w.token, false)
		w.armed = false
	}
	if n > 0 {
		select {
		case w.room <- struct{}{}:
		default:
		}
	}
}

// close stops all writing, before the connection's descriptor is closed.
func (w *tcpWriter) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.closeC)
		if w.armed && !w.loop.stop.Load() { // a stopped loop's epoll descriptor is closed, or about to be
			_ = w.loop.watchWritable(w.fd, w.token, false)
		}
		w.armed = false
		w.backlog = nil
	}
	w.mu.Unlock()
	w.loop.remove(w.token, nil)
}

// backlogLen returns the bytes waiting in the backlog, and the media frames dropped so far (for tests).
func (w *tcpWriter) backlogLen() (int, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.backlog), w.dropped
}
