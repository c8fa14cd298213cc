package ws

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var errNoEpoll = errors.New("ws: epoll is not available")

var errAgain = unix.EAGAIN

// connEvents are the events a connection is watched for: edge-triggered, so that epoll_wait does not poll every
// socket it reported last time again to see whether it is still readable.
const connEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// poller is one epoll loop. Each connection belongs to one poller, which does all its reading.
type poller struct {
	srv    *Server
	epfd   int
	wakefd int // an eventfd that interrupts epoll_wait at shutdown
	// parked (Config.ParkIdleLoops): a duplicate of epfd in the runtime's network poller, which reports it
	// readable when the loop has events; nil otherwise, or when the runtime would not take it.
	parked   *os.File
	parkedRC syscall.RawConn

	mu    sync.RWMutex
	conns map[int32]*Conn
	doors map[int32]*door // listening sockets this loop accepts on

	reapMu   sync.Mutex
	reaping  []*Conn // aborted connections for the loop to tear down (see Conn.abortLocked)
	resuming []*Conn // paused connections to read again (see Conn.ResumeReading)
	closed   bool    // the loop's descriptors are closed (guarded by reapMu)
}

func newPoller(s *Server) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("ws: epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("ws: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("ws: epoll_ctl: %w", err)
	}
	p := &poller{srv: s, epfd: epfd, wakefd: wakefd, conns: make(map[int32]*Conn), doors: make(map[int32]*door)}
	if s.cfg.ParkIdleLoops {
		p.park()
	}
	return p, nil
}

// isParked reports whether the loop waits parked in the runtime's network poller (Config.ParkIdleLoops).
func (p *poller) isParked() bool { return p.parked != nil }

// park puts a duplicate of the loop's epoll descriptor in the runtime's network poller, for wait; if that cannot
// be done, the loop waits in epoll_wait.
func (p *poller) park() {
	fd, err := unix.FcntlInt(uintptr(p.epfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return
	}
	f := os.NewFile(uintptr(fd), "ws-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	p.parked, p.parkedRC = f, rc
}

func (p *poller) add(c *Conn) error {
	p.mu.Lock()
	p.conns[int32(c.fd)] = c
	p.mu.Unlock()
	if err := p.watch(c.fd, connEvents); err != nil {
		p.remove(c)
		return err
	}
	return nil
}

func (p *poller) remove(c *Conn) {
	p.unwatch(c.fd)
	p.mu.Lock()
	if p.conns[int32(c.fd)] == c {
		delete(p.conns, int32(c.fd))
	}
	p.mu.Unlock()
}

// addDoor has the loop accept on d's listening socket (level-triggered: acceptAll takes a few at a time).
func (p *poller) addDoor(d *door) error {
	p.mu.Lock()
	p.doors[int32(d.fd)] = d
	p.mu.Unlock()
	if err := p.watch(d.fd, unix.EPOLLIN); err != nil {
		p.removeDoor(d)
		return err
	}
	return nil
}

func (p *poller) removeDoor(d *door) {
	p.unwatch(d.fd)
	p.mu.Lock()
	delete(p.doors, int32(d.fd))
	p.mu.Unlock()
}

// watch adds fd to the loop's epoll set, for events.
func (p *poller) watch(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("ws: epoll_ctl add: %w", err)
	}
	return nil
}

// unwatch takes fd out of the loop's epoll set.
func (p *poller) unwatch(fd int) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil) }

// watchWrite asks for (or stops asking for) EPOLLOUT on c; c.mu is held.
func (p *poller) watchWrite(c *Conn, on bool) {
	ev := unix.EpollEvent{Events: connEvents, Fd: int32(c.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

func (p *poller) wake() {
	p.reapMu.Lock()
	defer p.reapMu.Unlock()
	p.wakeLocked()
}

func (p *poller) wakeLocked() {
	if !p.closed { // after close the descriptor's number may be another file's
		var one = [8]byte{1}
		_, _ = unix.Write(p.wakefd, one[:])
	}
}

// reap has the loop tear c down, from any goroutine; c.mu is held.
func (p *poller) reap(c *Conn) {
	p.reapMu.Lock()
	defer p.reapMu.Unlock()
	p.reaping = append(p.reaping, c)
	p.wakeLocked()
}

// resume has the loop read c again after a pause, from any goroutine; c.mu is held.
func (p *poller) resume(c *Conn) {
	p.reapMu.Lock()
	defer p.reapMu.Unlock()
	p.resuming = append(p.resuming, c)
	p.wakeLocked()
}

// reapAll tears down the connections handed to reap, on the loop, and returns those handed to resume.
func (p *poller) reapAll() (resumed []*Conn) {
	var one [8]byte
	_, _ = unix.Read(p.wakefd, one[:]) // the eventfd is level-triggered: empty it
	p.reapMu.Lock()
	batch := p.reaping
	p.reaping = nil
	resumed, p.resuming = p.resuming, nil
	p.reapMu.Unlock()
	for _, c := range batch {
		if c.h != nil { // not torn down already
			c.teardown()
		}
	}
	return resumed
}

// resumeRead hands c's messages read before its pause to its Handler, then reads it again (its socket may have
// become readable while it was paused, and the edge-triggered event that said so was not acted on). It reports
// whether c may have more to read. A panic is contained as in serve.
func (p *poller) resumeRead(c *Conn, buf []byte) (more bool) {
	defer func() {
		if v := recover(); v != nil {
			more = false
			if !c.recovered(v, "epoll loop") {
				c.teardown()
			}
		}
	}()
	c.paused = false
	if !c.onData(nil) {
		c.teardown()
		return false
	}
	return p.read(c, buf)
}

func (p *poller) close() {
	p.reapMu.Lock()
	p.closed = true
	p.reapMu.Unlock()
	unix.Close(p.wakefd)
	if p.parked != nil {
		p.parked.Close()
	}
	unix.Close(p.epfd)
}

// run is the loop: wait for events, read what is readable, flush what is writable.
func (p *poller) run() {
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, 64<<10)
	// Connections whose last read filled buf: they may have more to read, and no new event will say so
	// (edge-triggered). They are read again after the other events of the batch, one buffer each time round, so
	// that one client sending without pause cannot hold the loop.
	var more, again []*Conn
	for {
		n, err := p.wait(events, len(more) == 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		more, again = again[:0], more
		for i := 0; i < n; i++ {
			ev := &events[i]
			if int(ev.Fd) == p.wakefd {
				// The eventfd is emptied (reapAll) before stop is looked at: Shutdown closes stop before it
				// wakes the loop, so a wake-up read here is never one whose stop goes unseen (looked at first,
				// a Shutdown between the look and the read left the loop asleep for good).
				resumed := p.reapAll()
				select {
				case <-p.srv.stop:
					return
				default:
				}
				for _, c := range resumed {
					if c.h != nil && p.resumeRead(c, buf) {
						more = append(more, c)
					}
				}
				continue
			}
			p.mu.RLock()
			c := p.conns[ev.Fd]
			var d *door
			if c == nil {
				d = p.doors[ev.Fd]
			}
			p.mu.RUnlock()
			if d != nil {
				d.acceptAllSafely()
			}
			if c != nil && p.serve(c, ev.Events, buf) {
				more = append(more, c)
			}
		}
		for i, c := range again {
			if c.h != nil && p.serve(c, unix.EPOLLIN, buf) { // c.h is nil once c is torn down
				more = append(more, c)
			}
			again[i] = nil
		}
	}
}

// serve handles events on c: flushes it if writable, reads it if readable, and reports whether it may have more
// to read. A panic in there (in the Handler, say) is contained: c alone is closed, and the loop goes on.
func (p *poller) serve(c *Conn, events uint32, buf []byte) (more bool) {
	defer func() {
		if v := recover(); v != nil {
			more = false
			if !c.recovered(v, "epoll loop") {
				c.teardown()
			}
		}
	}()
	if events&unix.EPOLLOUT != 0 {
		c.flush()
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.peerGone = true
	}
	return events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && p.read(c, buf)
}

// wait returns ready events. Under load some are usually ready already: a non-blocking look, as a raw system
// call, finds them without the scheduler's bookkeeping for a call that may block; only when there are none, and
// block is set, does the loop block in epoll_wait.
func (p *poller) wait(events []unix.EpollEvent, block bool) (int, error) {
	// epoll_pwait with no signal mask is epoll_wait, and exists on every architecture (arm64 has no epoll_wait).
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	switch {
	case e != 0 && e != unix.EINTR:
		return 0, e
	case n > 0 || !block:
		return int(n), nil
	}
	if p.parkedRC != nil {
		return p.waitParked(events)
	}
	return unix.EpollWait(p.epfd, events, -1)
}

// waitParked waits for events parked in the runtime's network poller (Config.ParkIdleLoops): it looks without
// blocking, and when there is nothing the goroutine parks until the runtime sees the epoll descriptor readable.
// An event that comes after the look makes it readable again, so none is missed.
func (p *poller) waitParked(events []unix.EpollEvent) (int, error) {
	var got int
	var werr error
	err := p.parkedRC.Read(func(uintptr) bool {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch e {
		case 0:
			got = int(n)
			return n > 0
		case unix.EINTR:
			return false
		}
		werr = e
		return true
	})
	if err != nil { // the runtime cannot poll it after all: block as without the option
		return unix.EpollWait(p.epfd, events, -1)
	}
	return got, werr
}

// read reads what c's peer sent, once, and reports whether that filled buf: then there may be more to read. The
// events are edge-triggered, so a read that fills less than buf has emptied the socket (bytes that arrive after
// it raise a new event). Once the peer has closed or reset its end (c.peerGone), no event will come again: then c
// is read on until the read that finds the end of the stream (or the reset), and is torn down at once, rather
// than sitting in CLOSE_WAIT until a ping meets the peer's reset.
func (p *poller) read(c *Conn, buf []byte) bool {
	for !c.paused {
		n, err := readRaw(c.fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil || n == 0:
			c.teardown()
			return false
		case !c.onData(buf[:n]):
			c.teardown()
			return false
		case n < len(buf) && c.peerGone && c.h != nil:
			continue // the end of the stream is next
		}
		return n == len(buf)
	}
	return false
}

// detach takes the socket out of the Go runtime's hands: it duplicates the descriptor and closes the original.
func detach(tcp *net.TCPConn) (int, error) {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("ws: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(orig uintptr) {
		fd, dupErr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("ws: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("ws: dup: %w", dupErr)
	}
	// The copy shares the original's open file description, so it is already non-blocking (the Go runtime made
	// it so) and needs no system call to become so.
	_ = tcp.Close()
	return fd, nil
}

// writev writes a and then b (which may be empty) with one system call; a full socket writes nothing and is no
// error. It is sendmsg rather than writev: the socket's own call, without the file layer's bookkeeping.
func writev(fd int, a, b []byte) (int, error) {
	iov := [2]unix.Iovec{{Base: &a[0]}, {}}
	iov[0].SetLen(len(a))
	msg := unix.Msghdr{Iov: &iov[0], Iovlen: 1}
	if len(b) > 0 {
		iov[1].Base = &b[0]
		iov[1].SetLen(len(b))
		msg.Iovlen = 2
	}
	for {
		// The socket is non-blocking: a raw system call cannot block the thread.
		n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, e
	}
}

// readRaw reads from a non-blocking socket with a raw system call (recvfrom, the socket's own call).
func readRaw(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// write writes b, returning errAgain when the socket has no room at all.
func write(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errAgain
		}
		return 0, err
	}
}

func shutdown(fd int)      { _ = unix.Shutdown(fd, unix.SHUT_RDWR) }
func shutdownWrite(fd int) { _ = unix.Shutdown(fd, unix.SHUT_WR) }
func closeFD(fd int)       { _ = unix.Close(fd) }
