package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The loop engine (-engine loops, the default on Linux): the generator's data path on event loops of its own.
//
// A generator that spends a goroutine wake-up and a system call on every packet costs more per packet than a
// TURN server that batches, and then it, not the server, is what saturates. So once the calls are set up, every
// client's socket leaves Go's netpoller (its descriptor duplicated, the net.Conn closed) and is served by one of a
// few loops (-loops), each with an epoll set of its own that its goroutine waits on in Go's netpoller:
//
//   - UDP: a readable socket is read with recvmmsg, up to udpBatch datagrams a call, until it is empty; a client's
//     packets are sent with sendmmsg, all it may send in one call.
//   - TCP: a readable connection is read into a 64 KiB buffer of its own until it is empty, and its frames parsed
//     there; a client writes all the frames it may send in one send.
//
// Both clients of a call are on the same loop, so that a packet received gives its sender a credit without any
// lock. A loop's timerfd paces the sends (-rate: every millisecond, each client's packets spread evenly over time,
// as the goroutine engine does) or, at saturation, checks for stalls: a client that has waited 200 ms for a credit
// takes its packets in flight as lost and sends a whole window again (those packets, if they come after all, are
// delivered but give no credit, so that no more than a window is ever in flight; the stalls are counted).
//
// Every packet carries a sequence number in its first 8 bytes of data; the rest is a fixed pattern. A packet
// counts as delivered only when its header and data are exactly as sent and its sequence number is above the last
// one delivered in that direction: a server that corrupts, duplicates or reorders packets does not look better for
// it (the packets are counted in Corrupt or OutOfOrder, and not delivered).

const (
	// udpBatch is the most datagrams one recvmmsg or sendmmsg handles.
	udpBatch = 64
	// tcpReadBuffer is a TCP client's read buffer: what one recv may read.
	tcpReadBuffer = 64 << 10
	// loopEventsMax is the most epoll events a loop takes at once.
	loopEventsMax = 256
	// stallAfter is how long a saturating client waits for a credit before it takes its packets in flight as lost.
	stallAfter = 200 * time.Millisecond
	// timerToken is the epoll token of a loop's timerfd; a client's is its index in the loop.
	timerToken = -1
	// frameHead is the bytes of a frame before its fixed pattern: the ChannelData header and the sequence number.
	frameHead = 4 + seqSize
)

const defaultEngine = "loops"

// loopEngine is the running loop engine.
type loopEngine struct {
	loops    []*genLoop
	conns    []*genConn
	stopSend atomic.Bool
	stopAll  atomic.Bool
	wg       sync.WaitGroup
}

// genConn is one client on a loop.
type genConn struct {
	e     *endpoint
	fd    int
	tcp   bool
	peer  *genConn // the client that sends to this one, and that this one sends to
	token int

	owed       int   // packets it may send now
	dirty      bool  // in the loop's list of clients with something to send
	lastCredit int64 // nanoseconds since the loop started, when it last got a credit (or a window after a stall)
	seqOut     uint64
	writtenOff uint64 // its packets below this sequence number were taken as lost at a stall: they give no credit
	lastIn     uint64 // the sequence number of the last packet delivered to it
	done       bool   // its socket failed or ended: no more reading or writing

	// TCP only.
	wpos      int    // bytes of the frame being written that are written
	rbuf      []byte // rbuf[:rend] is read and not parsed yet (the start of a frame)
	rend      int
	sendSlice []byte
}

// genLoop is one event loop of the engine.
type genLoop struct {
	eng     *loopEngine
	epfd    int
	epoll   *os.File
	raw     syscall.RawConn
	awaitFn func(uintptr) bool
	timer   int
	events  []unix.EpollEvent
	ready   int
	conns   []*genConn
	dirty   []*genConn
	start   time.Time

	rate     int
	window   int
	interval int64 // paced: nanoseconds between two of the loop's packets
	due      int64 // paced: the packets scheduled so far

	frame []byte // the frame every client sends, its sequence number aside (padded over TCP)
	size  int    // the data in it

	// UDP.
	rmsgs []unix.Mmsghdr
	riovs []unix.Iovec
	rbufs [][]byte
	smsgs []unix.Mmsghdr
	siovs []unix.Iovec
	heads [][frameHead]byte
	// TCP: the frame, repeated, with room for tcpReadBuffer bytes of frames.
	sbuf []byte

	corrupt, outOfOrder, stalls atomic.Uint64
}

// startLoops takes the endpoints' sockets out of their net.Conns and starts c.loops loops driving them.
func startLoops(c *config, eps []*endpoint) (engine, error) {
	eng := &loopEngine{}
	nloops := min(c.loops, len(eps)/2)
	var err error
	for range nloops {
		l, lerr := newGenLoop(eng, c)
		if lerr != nil {
			err = lerr
			break
		}
		eng.loops = append(eng.loops, l)
	}
	for i := 0; err == nil && i < len(eps); i += 2 {
		l := eng.loops[(i/2)%nloops]
		a, aerr := l.adopt(eps[i], c.transport == "tcp")
		b, berr := l.adopt(eps[i+1], c.transport == "tcp")
		if err = errors.Join(aerr, berr); err == nil {
			a.peer, b.peer = b, a
		}
	}
	if err == nil {
		for _, l := range eng.loops {
			err = errors.Join(err, l.watch())
		}
	}
	if err != nil {
		eng.release()
		return nil, err
	}
	for _, l := range eng.loops {
		l.begin()
		eng.wg.Go(l.run)
	}
	return eng, nil
}

func (eng *loopEngine) counts() (sent, delivered uint64) {
	for _, c := range eng.conns {
		sent += c.e.sent.Load()
		delivered += c.e.received.Load()
	}
	return sent, delivered
}

func (eng *loopEngine) stopSending() { eng.stopSend.Store(true) }

func (eng *loopEngine) close() {
	eng.stopAll.Store(true)
	eng.wg.Wait()
	eng.release()
}

func (eng *loopEngine) faults() faultCounts {
	var f faultCounts
	for _, l := range eng.loops {
		f.corrupt += l.corrupt.Load()
		f.outOfOrder += l.outOfOrder.Load()
		f.stalls += l.stalls.Load()
	}
	return f
}

// release closes the sockets and the loops' descriptors; the loops are not running.
func (eng *loopEngine) release() {
	for _, c := range eng.conns {
		_ = unix.Close(c.fd)
	}
	eng.conns = nil
	for _, l := range eng.loops {
		_ = l.epoll.Close()
		_ = unix.Close(l.timer)
	}
	eng.loops = nil
}

func newGenLoop(eng *loopEngine, c *config) (*genLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	timer, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	// The epoll descriptor is pollable itself: non-blocking, Go's netpoller waits on it for the loop's goroutine,
	// which then holds no thread blocked in a system call.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(timer)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "turnload-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		_ = unix.Close(timer)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	l := &genLoop{
		eng: eng, epfd: epfd, epoll: f, raw: raw, timer: timer, events: make([]unix.EpollEvent, loopEventsMax),
		rate: c.rate, window: c.window, size: c.size,
	}
	l.awaitFn = l.await
	l.frame = makeFrame(c.size, c.transport == "tcp")
	if c.transport == "tcp" {
		n := tcpReadBuffer/len(l.frame) + 2
		l.sbuf = bytes.Repeat(l.frame, n)
	} else {
		l.rmsgs = make([]unix.Mmsghdr, udpBatch)
		l.riovs = make([]unix.Iovec, udpBatch)
		l.rbufs = make([][]byte, udpBatch)
		l.smsgs = make([]unix.Mmsghdr, udpBatch)
		l.siovs = make([]unix.Iovec, 2*udpBatch)
		l.heads = make([][frameHead]byte, udpBatch)
		for i := range udpBatch {
			l.rbufs[i] = make([]byte, 2048)
			l.riovs[i].Base = &l.rbufs[i][0]
			l.riovs[i].SetLen(len(l.rbufs[i]))
			l.rmsgs[i].Hdr.Iov = &l.riovs[i]
			l.rmsgs[i].Hdr.SetIovlen(1)
			copy(l.heads[i][:], l.frame[:frameHead])
			l.siovs[2*i].Base = &l.heads[i][0]
			l.siovs[2*i].SetLen(frameHead)
			l.siovs[2*i+1].Base = &l.frame[frameHead]
			l.siovs[2*i+1].SetLen(len(l.frame) - frameHead)
			l.smsgs[i].Hdr.Iov = &l.siovs[2*i]
			l.smsgs[i].Hdr.SetIovlen(2)
		}
	}
	return l, nil
}

// makeFrame is the ChannelData frame on channel 0x4000 with size bytes of data: a zero sequence number, then the
// pattern, padded to a multiple of 4 bytes over TCP.
func makeFrame(size int, tcp bool) []byte {
	f := make([]byte, frameHead, 4+size+3)
	binary.BigEndian.PutUint16(f, channel)
	binary.BigEndian.PutUint16(f[2:], uint16(size))
	for i := seqSize; i < size; i++ {
		f = append(f, byte(i))
	}
	if tcp {
		for len(f)%4 != 0 {
			f = append(f, 0)
		}
	}
	return f
}

// channel is the channel number every client binds.
const channel = 0x4000

// adopt takes e's socket out of its net.Conn (a duplicate of the descriptor stays, out of Go's netpoller) for the
// loop.
func (l *genLoop) adopt(e *endpoint, tcp bool) (*genConn, error) {
	sc, ok := e.c.Conn().(syscall.Conn)
	if !ok {
		return nil, errors.New("the client's connection has no descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("client socket: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("client socket: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("client socket: dup: %w", dupErr)
	}
	_ = e.c.Close() // the duplicate keeps the socket open; Go's netpoller forgets the original
	c := &genConn{e: e, fd: fd, tcp: tcp, token: len(l.conns)}
	l.eng.conns = append(l.eng.conns, c)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("client socket: %w", err)
	}
	if tcp {
		c.rbuf = make([]byte, tcpReadBuffer)
	}
	l.conns = append(l.conns, c)
	return c, nil
}

// watch puts the loop's sockets and timer in its epoll set, the timer not running yet.
func (l *genLoop) watch() error {
	for _, c := range l.conns {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(c.token)}
		if c.tcp {
			ev.Events |= unix.EPOLLOUT | unix.EPOLLRDHUP
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			return fmt.Errorf("epoll: %w", err)
		}
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.timer, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: timerToken}); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	return nil
}

// begin starts the clock and the timer, and gives every saturating client its window.
func (l *genLoop) begin() {
	l.start = time.Now()
	tick := 10 * time.Millisecond // saturating: how often stalls are looked for
	if l.rate > 0 {
		tick = time.Millisecond
		l.interval = int64(time.Second) / int64(l.rate*len(l.conns))
	}
	spec := unix.ItimerSpec{Interval: unix.NsecToTimespec(int64(tick)), Value: unix.NsecToTimespec(int64(tick))}
	_ = unix.TimerfdSettime(l.timer, 0, &spec, nil)
	for _, c := range l.conns {
		c.seqOut = 1
		if l.rate == 0 {
			c.owed = l.window
			l.markDirty(c)
		}
	}
}

func (l *genLoop) markDirty(c *genConn) {
	if !c.dirty {
		c.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

func (l *genLoop) run() {
	for !l.eng.stopAll.Load() {
		if err := l.raw.Read(l.awaitFn); err != nil {
			fmt.Fprintln(os.Stderr, "tandem-turnload: waiting for events:", err)
			return
		}
		now := int64(time.Since(l.start))
		ticked := false
		for i := range l.ready {
			ev := l.events[i]
			if ev.Fd == timerToken {
				var b [8]byte
				_, _ = unix.Read(l.timer, b[:])
				ticked = true
				continue
			}
			c := l.conns[ev.Fd]
			if c.done {
				continue
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				if c.tcp {
					l.readTCP(c, now)
				} else {
					l.readUDP(c, now)
				}
			}
			if ev.Events&unix.EPOLLOUT != 0 && c.owed > 0 {
				l.markDirty(c)
			}
		}
		if ticked {
			l.tick(now) // after the turn's packets: a loop that was not running for a while sees their credits first
		}
		l.flush()
	}
}

// await is called by Go's netpoller (through l.raw.Read) until it reports true: when events are ready, their
// number in l.ready.
func (l *genLoop) await(uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
			uintptr(len(l.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		l.ready = int(n)
		if e != 0 {
			l.ready = 0
		}
		return l.ready > 0
	}
}

// tick schedules the paced packets due by now, or restarts the windows of saturating clients that stalled.
func (l *genLoop) tick(now int64) {
	if l.eng.stopSend.Load() {
		return
	}
	if l.rate > 0 {
		for due := now / l.interval; l.due < due; l.due++ {
			c := l.conns[l.due%int64(len(l.conns))]
			c.owed++
			l.markDirty(c)
		}
		return
	}
	for _, c := range l.conns {
		if c.owed == 0 && now-c.lastCredit > int64(stallAfter) {
			l.stalls.Add(1)
			c.writtenOff = c.seqOut // if they come after all, they are delivered, but the window is not exceeded
			c.owed = l.window
			c.lastCredit = now
			l.markDirty(c)
		}
	}
}

// credit gives c, the sender of n packets just delivered, as many to send again (at saturation).
func (l *genLoop) credit(c *genConn, n int, now int64) {
	if l.rate > 0 || n == 0 {
		return
	}
	c.owed += n
	c.lastCredit = now
	l.markDirty(c)
}

// flush sends what the clients in the dirty list may send.
func (l *genLoop) flush() {
	stopped := l.eng.stopSend.Load()
	for _, c := range l.dirty {
		c.dirty = false
		if stopped || c.done {
			c.owed = 0
			continue
		}
		if c.tcp {
			l.sendTCP(c)
		} else {
			l.sendUDP(c)
		}
	}
	l.dirty = l.dirty[:0]
	if stopped {
		return
	}
	// A UDP client whose socket refused a packet (a full send buffer) tries again on the next event or tick.
	for _, c := range l.conns {
		if c.owed > 0 && !c.tcp && !c.done {
			l.markDirty(c)
		}
	}
}

// sendUDP sends c's packets with sendmmsg, each with the next sequence number.
func (l *genLoop) sendUDP(c *genConn) {
	for c.owed > 0 {
		k := min(c.owed, udpBatch)
		for i := range k {
			binary.BigEndian.PutUint64(l.heads[i][4:], c.seqOut+uint64(i))
		}
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&l.smsgs[0])), uintptr(k),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0 || n == 0:
			return // a full send buffer, or an error the socket reports (an ICMP message): later
		}
		c.seqOut += uint64(n)
		c.owed -= int(n)
		c.e.sent.Add(uint64(n))
		if int(n) < k {
			return
		}
	}
}

// readUDP reads c's socket until it is empty, counting what is delivered.
func (l *genLoop) readUDP(c *genConn, now int64) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&l.rmsgs[0])), udpBatch,
			unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return // EAGAIN: empty; or an error the socket reports (an ICMP message): nothing read
		}
		good, credits := 0, 0
		for i := range int(n) {
			p := l.rbufs[i][:l.rmsgs[i].Len]
			if l.rmsgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
				l.corrupt.Add(1)
				l.rmsgs[i].Hdr.Flags = 0
				continue
			}
			if ok, credit := l.check(c, p); ok {
				good++
				if credit {
					credits++
				}
			}
		}
		c.e.received.Add(uint64(good))
		l.credit(c.peer, credits, now)
		if int(n) < udpBatch {
			return
		}
	}
}

// check looks at one ChannelData frame (or STUN message, which is left alone) to c and reports whether it is a
// packet delivered: on the channel, with the data as sent, after the last one delivered; and whether it gives its
// sender a credit (one sent after its sender's last stall).
func (l *genLoop) check(c *genConn, p []byte) (delivered, credit bool) {
	if len(p) > 0 && p[0]&0xC0 == 0 {
		return false, false // a STUN message: not the data path's
	}
	end := 4 + l.size
	if len(p) < end || len(p) > (end+3)&^3 || !bytes.Equal(p[:4], l.frame[:4]) || !bytes.Equal(p[frameHead:end], l.frame[frameHead:end]) {
		l.corrupt.Add(1)
		return false, false
	}
	seq := binary.BigEndian.Uint64(p[4:frameHead])
	if seq <= c.lastIn || seq >= c.peer.seqOut {
		l.outOfOrder.Add(1) // seen before, or after a later one (or never sent: a corrupt sequence number)
		return false, false
	}
	c.lastIn = seq
	return true, seq >= c.peer.writtenOff
}

// sendTCP writes as many of c's packets as its connection takes in one send, each with the next sequence number.
func (l *genLoop) sendTCP(c *genConn) {
	fl := len(l.frame)
	for c.owed > 0 {
		start := c.wpos // the first frame may be partly written already
		chunk := min(c.owed*fl-start, len(l.sbuf)-start)
		frames := (start + chunk + fl - 1) / fl
		for j := range frames {
			binary.BigEndian.PutUint64(l.sbuf[j*fl+4:], c.seqOut+uint64(j))
		}
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(&l.sbuf[start])), uintptr(chunk),
			unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return // EPOLLOUT comes when there is room
		case e != 0:
			l.fail(c)
			return
		}
		total := start + int(n)
		whole := total / fl
		c.wpos = total % fl
		c.seqOut += uint64(whole)
		c.owed -= whole
		c.e.sent.Add(uint64(whole))
		if int(n) < chunk {
			return
		}
	}
}

// readTCP reads c's connection until it is empty, counting what is delivered.
func (l *genLoop) readTCP(c *genConn, now int64) {
	for {
		room := len(c.rbuf) - c.rend
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&c.rbuf[c.rend])), uintptr(room),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return
		case e != 0 || n == 0: // an error, or the server closed the connection
			l.fail(c)
			return
		}
		c.rend += int(n)
		good, credits, used, ok := l.parseTCP(c, c.rbuf[:c.rend])
		c.rend = copy(c.rbuf, c.rbuf[used:c.rend])
		c.e.received.Add(uint64(good))
		l.credit(c.peer, credits, now)
		if !ok {
			l.corrupt.Add(1)
			l.fail(c)
			return
		}
		if int(n) < room {
			return // a short read: the connection is empty
		}
	}
}

// parseTCP goes through the whole frames at the start of b and returns how many were packets delivered (and how
// many of those give a credit), and the bytes they took; ok is false when b does not start with a frame.
func (l *genLoop) parseTCP(c *genConn, b []byte) (good, credits, used int, ok bool) {
	for len(b)-used >= 4 {
		p := b[used:]
		length := int(binary.BigEndian.Uint16(p[2:]))
		var size int
		switch p[0] & 0xC0 {
		case 0x40:
			size = 4 + (length+3)&^3
		case 0:
			size = 20 + length
		default:
			return good, credits, used, false
		}
		if size > len(p) {
			if size > len(c.rbuf) {
				return good, credits, used, false
			}
			break
		}
		if delivered, credit := l.check(c, p[:size]); delivered {
			good++
			if credit {
				credits++
			}
		}
		used += size
	}
	return good, credits, used, true
}

// fail takes c out of the loop: its socket failed or ended.
func (l *genLoop) fail(c *genConn) {
	if !c.done {
		c.done = true
		c.owed = 0
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	}
}
