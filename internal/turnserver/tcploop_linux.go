package turnserver

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Plain TCP connections on the loops (Linux).
//
// A plain TCP connection is served by a loop both ways, like a UDP client: the loop reads it (a non-blocking recv
// into the connection's buffer when epoll says it is readable), relays the ChannelData frames on a channel tandem
// knows to the peer at once, and hands the other frames (STUN requests, Send indications) to pion through a
// queue that the connection's Read returns from; and the loop writes a peer's datagram to it as ChannelData.
// No goroutine is woken for a relayed packet either way.
//
// A loop must never block, and a TCP write may (a client that stops reading fills its receive window, then the
// server's send buffer), so the loops write with non-blocking system calls on the connection's descriptor. What
// the socket does not take waits in a bounded backlog of the connection's, written when the socket reports room
// (EPOLLOUT, asked for while there is a backlog); a frame that does not fit in the backlog is dropped whole, as a
// router drops what it cannot queue (the client sees a lost packet, as over UDP). pion's own messages (STUN
// responses, Data indications) go through the same writer, so that the two never interleave inside a frame;
// pion's goroutine waits for room instead of dropping them. TLS connections are read and written as before, by
// goroutines.

const (
	// tcpBacklog is the most bytes waiting in a TCP connection's backlog, beyond what its socket's send buffer
	// holds: about 13 frames of 1,200-byte media.
	tcpBacklog = 16 << 10
	// tcpPionQueue is the most frames of a TCP connection waiting for pion (STUN messages, Send indications, and
	// ChannelData tandem does not relay itself); more are dropped.
	tcpPionQueue = 32
	// tcpLoopRead is the most bytes one read of a TCP connection brings: into a buffer of the loop's, so that a
	// busy connection's frames come many to a system call; what is left of a frame begun waits in the
	// connection's own buffer, which holds one frame.
	tcpLoopRead = 64 << 10
)

// tcpLoopConn is the loop's side of a plain TCP connection: its descriptor, read and written without blocking.
type tcpLoopConn struct {
	c     *trackedConn
	fd    int // the connection's descriptor; valid while !closed (only trackedConn.Close closes it, after close)
	loop  *dataLoop
	token uint32
	in    chan *pionPacket // frames for pion, returned by trackedConn.Read

	// Touched by the loop's goroutine only: buf[:end] is the start of a frame, read and not parsed yet.
	buf []byte
	end int

	mu       sync.Mutex // guards what follows: held only around non-blocking system calls and copies
	closed   bool
	broken   bool      // a write failed (reset, or shut down): what follows is dropped; the reader sees the end
	readEnd  bool      // reading ended (readErr set): the descriptor is out of the epoll set
	readErr  error     // why reading ended, for Read once the queue is drained
	armed    bool      // EPOLLOUT is asked for
	backlog  []byte    // bytes the socket did not take yet, at most tcpBacklog (plus the tail of a frame begun)
	dropped  uint64    // media frames dropped for a full backlog (for tests)
	deadline time.Time // Read's deadline

	room    chan struct{} // signalled when the backlog shrinks, for pion's writes waiting
	changed chan struct{} // signalled when reading ends or the deadline changes, for Read waiting
	closeC  chan struct{} // closed by close
}

// attachLoop makes loop serve c, a plain TCP connection, from now on, with deadline as its read deadline.
func (c *trackedConn) attachLoop(tcp *net.TCPConn, loop *dataLoop, deadline time.Time) error {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return fmt.Errorf("turnserver: TCP connection: %w", err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return fmt.Errorf("turnserver: TCP connection: %w", err)
	}
	lc := &tcpLoopConn{
		c: c, fd: fd, loop: loop, in: make(chan *pionPacket, tcpPionQueue), buf: make([]byte, maxTCPFrame),
		deadline: deadline, room: make(chan struct{}, 1), changed: make(chan struct{}, 1), closeC: make(chan struct{}),
	}
	// The token is taken first and the item put under it after: the loop, which finds the item under the loop's
	// lock, then sees lc.token as set (the kernel's ordering of the epoll registration is not the Go memory
	// model's).
	lc.token = loop.register(loopItem{})
	loop.set(lc.token, loopItem{tcp: lc})
	if err := loop.watchTCP(fd, lc.token, unix.EPOLL_CTL_ADD, false); err != nil {
		loop.remove(lc.token, nil)
		return err
	}
	c.lc = lc
	return nil
}

// eventsLocked changes what the loop waits for on the descriptor: readable, and writable if armed.
func (lc *tcpLoopConn) eventsLocked() error {
	return lc.loop.watchTCP(lc.fd, lc.token, unix.EPOLL_CTL_MOD, lc.armed)
}

// send writes b to the socket without blocking, and returns how much it took: 0 when its send buffer is full.
// lc.mu is held.
func (lc *tcpLoopConn) send(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(lc.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
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
func (lc *tcpLoopConn) writeMedia(frame []byte) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.closed || lc.broken {
		return
	}
	if len(lc.backlog) > 0 {
		if len(lc.backlog)+len(frame) > tcpBacklog {
			lc.dropped++
			return
		}
		lc.backlog = append(lc.backlog, frame...)
		return
	}
	n, err := lc.send(frame)
	if err != nil {
		lc.broken = true
		return
	}
	if n < len(frame) {
		lc.queueLocked(frame[n:])
	}
}

// writeMediaBatch writes the ChannelData frames of iovs with one sendmsg (msg is the loop's, to describe them);
// what the socket does not take is queued or dropped as by writeMedia, frame by frame. It never blocks.
func (lc *tcpLoopConn) writeMediaBatch(iovs []unix.Iovec, msg *unix.Msghdr) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.closed || lc.broken {
		return
	}
	taken := 0
	if len(lc.backlog) == 0 {
		msg.Iov = &iovs[0]
		msg.SetIovlen(len(iovs))
		var err error
		taken, err = lc.sendmsg(msg)
		msg.Iov = nil
		if err != nil {
			lc.broken = true
			return
		}
	}
	for i := range iovs {
		size := int(iovs[i].Len)
		if taken >= size {
			taken -= size
			continue
		}
		rest := unsafe.Slice(iovs[i].Base, size)[taken:]
		begun := taken > 0
		taken = 0
		switch {
		case begun || len(lc.backlog) == 0:
			lc.queueLocked(rest) // the tail of a frame begun is always kept, and a whole one fits the empty backlog
		case len(lc.backlog)+len(rest) > tcpBacklog:
			lc.dropped++
		default:
			lc.backlog = append(lc.backlog, rest...)
		}
	}
}

// sendmsg writes what msg describes without blocking, and returns how much the socket took: 0 when its send
// buffer is full. lc.mu is held.
func (lc *tcpLoopConn) sendmsg(msg *unix.Msghdr) (int, error) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(lc.fd), uintptr(unsafe.Pointer(msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
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

// queueLocked puts b, the rest of a frame the socket took part of or a whole one, in the backlog, and asks the
// loop for EPOLLOUT.
func (lc *tcpLoopConn) queueLocked(b []byte) {
	if lc.backlog == nil {
		lc.backlog = make([]byte, 0, tcpBacklog+maxTCPFrame)
	}
	lc.backlog = append(lc.backlog, b...)
	if !lc.armed && !lc.readEnd {
		lc.armed = true
		if lc.eventsLocked() != nil {
			lc.armed, lc.broken, lc.backlog = false, true, lc.backlog[:0]
		}
	}
}

// write is pion's write of one message: written, or queued whole; when the backlog is full, it waits for room.
func (lc *tcpLoopConn) write(p []byte) (int, error) {
	for {
		lc.mu.Lock()
		switch {
		case lc.closed:
			lc.mu.Unlock()
			return 0, fmt.Errorf("turnserver: TCP connection: %w", net.ErrClosed)
		case lc.broken:
			lc.mu.Unlock()
			return 0, fmt.Errorf("turnserver: TCP connection: %w", unix.EPIPE)
		case len(lc.backlog) == 0:
			n, err := lc.send(p)
			if err != nil {
				lc.broken = true
				lc.mu.Unlock()
				return 0, fmt.Errorf("turnserver: TCP connection: %w", err)
			}
			if n < len(p) {
				lc.queueLocked(p[n:])
			}
			lc.mu.Unlock()
			return len(p), nil
		case len(lc.backlog)+len(p) <= tcpBacklog:
			lc.backlog = append(lc.backlog, p...)
			lc.mu.Unlock()
			return len(p), nil
		}
		lc.mu.Unlock()
		select {
		case <-lc.room:
		case <-lc.closeC:
		}
	}
}

// writable is called by the loop when the socket has room: it writes what it can of the backlog.
func (lc *tcpLoopConn) writable() {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.closed || !lc.armed {
		return
	}
	n, err := lc.send(lc.backlog)
	if err != nil {
		lc.broken = true
		n = len(lc.backlog)
	}
	lc.backlog = lc.backlog[:copy(lc.backlog, lc.backlog[n:])]
	if len(lc.backlog) == 0 {
		lc.armed = false
		if !lc.readEnd {
			_ = lc.eventsLocked()
		}
	}
	if n > 0 {
		signal(lc.room)
	}
}

// signal wakes whoever waits on ch, if anyone.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// readable is called by the loop when the socket has data, or has ended: it reads once (into the loop's buffer,
// behind the start of a frame left from the read before), relays the channel data it knows, queues the other
// frames for pion, and keeps what is left of a frame begun.
func (lc *tcpLoopConn) readable() {
	l := lc.loop
	buf := l.tcpScratch
	carry := copy(buf, lc.buf[:lc.end])
	var (
		err  error
		read int
	)
	// Under mu: the descriptor is not closed (and its number perhaps reused by another connection) meanwhile.
	lc.mu.Lock()
	if lc.closed || lc.readEnd {
		lc.mu.Unlock()
		return
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(lc.fd), uintptr(unsafe.Pointer(&buf[carry])),
			uintptr(len(buf)-carry), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			lc.mu.Unlock()
			return
		case e != 0:
			err = e
		case n == 0:
			err = io.EOF
		default:
			read = int(n)
		}
		break
	}
	lc.mu.Unlock()
	b := buf[:carry+read]
	off := 0
	for {
		size, ferr := frameSize(b[off:])
		if ferr != nil {
			l.flushPeers()
			lc.end = 0
			lc.c.l.s.limited(limitTCPGarbage, lc.c.RemoteAddr(), "")
			lc.endReading(ferr)
			return
		}
		if size == 0 {
			break
		}
		frame := b[off : off+size]
		off += size
		if isChannelData(frame) {
			if rc := lc.c.relay.Load(); rc != nil && l.fromClient(rc, frame) {
				continue // to a peer: sent with the others of this read, below
			}
		}
		queuePacket(lc.in, frame, netip.AddrPort{})
	}
	l.flushPeers() // before the loop's buffer is read into again
	lc.end = copy(lc.buf, b[off:])
	if err != nil {
		lc.endReading(err)
	}
}

// endReading takes the descriptor out of the epoll set for good, and has Read return err once the queue is drained.
func (lc *tcpLoopConn) endReading(err error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.readEnd || lc.closed {
		return
	}
	lc.readEnd, lc.readErr = true, err
	lc.armed, lc.backlog = false, lc.backlog[:0]
	_ = lc.loop.watchTCP(lc.fd, lc.token, unix.EPOLL_CTL_DEL, false)
	signal(lc.changed)
}

// read is pion's read of the next frame the loop queued, within the deadline.
func (lc *tcpLoopConn) read(p []byte) (int, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case pkt := <-lc.in:
			return lc.take(pkt, p)
		default:
		}
		lc.mu.Lock()
		closed, end, err, deadline := lc.closed, lc.readEnd, lc.readErr, lc.deadline
		lc.mu.Unlock()
		switch {
		case closed:
			return 0, fmt.Errorf("turnserver: TCP connection: %w", net.ErrClosed)
		case end:
			return 0, err
		case !deadline.IsZero() && !time.Now().Before(deadline):
			lc.c.l.s.limited(limitTCPIdle, lc.c.RemoteAddr(), "")
			return 0, fmt.Errorf("turnserver: TCP connection: %w", os.ErrDeadlineExceeded)
		}
		var expired <-chan time.Time
		if !deadline.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(deadline))
			} else {
				timer.Reset(time.Until(deadline))
			}
			expired = timer.C
		}
		select {
		case pkt := <-lc.in:
			return lc.take(pkt, p)
		case <-lc.changed:
		case <-lc.closeC:
		case <-expired:
		}
	}
}

func (lc *tcpLoopConn) take(pkt *pionPacket, p []byte) (int, error) {
	if len(p) < len(pkt.b) {
		size := len(pkt.b)
		pkt.pool.Put(pkt)
		return 0, fmt.Errorf("turnserver: a %d-byte read buffer for a %d-byte frame: %w", len(p), size, io.ErrShortBuffer)
	}
	n, _ := pkt.take(p)
	return n, nil
}

// setDeadline sets Read's deadline.
func (lc *tcpLoopConn) setDeadline(t time.Time) {
	lc.mu.Lock()
	lc.deadline = t
	lc.mu.Unlock()
	signal(lc.changed)
}

// close stops all reading and writing, before the connection's descriptor is closed.
func (lc *tcpLoopConn) close() {
	lc.mu.Lock()
	if !lc.closed {
		lc.closed = true
		close(lc.closeC)
		if !lc.readEnd && !lc.loop.stop.Load() { // a stopped loop's epoll descriptor is closed, or about to be
			_ = lc.loop.watchTCP(lc.fd, lc.token, unix.EPOLL_CTL_DEL, false)
		}
		lc.armed = false
		lc.backlog = nil
	}
	lc.mu.Unlock()
	lc.loop.remove(lc.token, nil)
	for {
		select {
		case pkt := <-lc.in:
			pkt.pool.Put(pkt)
		default:
			return
		}
	}
}

// backlogLen returns the bytes waiting in the backlog, and the media frames dropped so far (for tests).
func (lc *tcpLoopConn) backlogLen() (int, uint64) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return len(lc.backlog), lc.dropped
}
