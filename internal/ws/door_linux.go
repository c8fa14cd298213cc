package ws

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// door accepts connections on a listening socket inside an epoll loop. A connection's request is read by the
// loop that will serve the connection; a WebSocket handshake its Acceptor takes is answered there at once, so a
// new client costs no goroutine, no HTTP server state and no second descriptor. Any other request is handed to
// net/http, with the bytes read so far, through the net.Listener the door also is.
type door struct {
	srv    *Server
	p      *poller // the loop that accepts
	accept Acceptor
	addr   net.Addr

	mu      sync.Mutex // held while accepting, so that Close never closes fd under accept4
	fd      int
	closed  bool
	paused  bool          // out of descriptors: the socket is out of the loop for a while
	backoff time.Duration // how long the next pause lasts

	handoff chan net.Conn // connections for net/http
	done    chan struct{} // closed by Close
	once    sync.Once
}

// Listen serves ln from the server's epoll loops: they accept its connections and complete the WebSocket
// handshakes that accept takes. It returns the listener of every other connection, which the caller serves with
// net/http (a handshake that lands there can still be completed with Upgrade). ln is closed; closing the returned
// listener stops accepting. Where there is no epoll loop (another platform, Config.NoEpoll, a listener that is
// not TCP) ln itself is returned, and net/http sees everything.
func (s *Server) Listen(ln net.Listener, accept Acceptor) (net.Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok || len(s.pollers) == 0 {
		return ln, nil
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ws: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(orig uintptr) {
		fd, dupErr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("ws: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("ws: dup: %w", dupErr)
	}
	d := &door{
		srv: s, p: s.pollers[0], accept: accept, addr: ln.Addr(), fd: fd,
		backoff: 5 * time.Millisecond,
		handoff: make(chan net.Conn, 64),
		done:    make(chan struct{}),
	}
	_ = ln.Close()
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.doors = append(s.doors, d)
	}
	s.mu.Unlock()
	if closing {
		unix.Close(fd)
		return nil, errClosed
	}
	if err := d.p.addDoor(d); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return d, nil
}

// Accept returns the next connection for net/http.
func (d *door) Accept() (net.Conn, error) {
	select {
	case c := <-d.handoff:
		return c, nil
	case <-d.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting. Connections accepted already are unaffected.
func (d *door) Close() error {
	d.once.Do(func() {
		close(d.done)
		d.p.removeDoor(d)
		d.mu.Lock()
		d.closed = true
		unix.Close(d.fd)
		d.mu.Unlock()
		for {
			select {
			case c := <-d.handoff:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (d *door) Addr() net.Addr { return d.addr }

// acceptAllSafely is acceptAll with a panic contained: it is logged and counted, and the loop goes on.
func (d *door) acceptAllSafely() {
	defer func() {
		if v := recover(); v != nil {
			d.srv.panics.Add(1)
			if l := d.srv.cfg.Logger; l != nil {
				l.Error("panic while accepting connections", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}
	}()
	d.acceptAll()
}

// acceptAll takes the connections waiting on the listening socket, a bounded number at a time (the socket is
// level-triggered: the loop comes back for the rest after serving other events).
func (d *door) acceptAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < 64 && !d.closed; i++ {
		var sa unix.RawSockaddrAny
		salen := uint32(unix.SizeofSockaddrAny)
		nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(d.fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			d.backoff = 5 * time.Millisecond
			d.start(int(nfd), sockaddrIP(&sa))
			continue
		case unix.EINTR, unix.ECONNABORTED, unix.EPERM, unix.EPROTO:
			continue
		case unix.EAGAIN:
			return
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			d.pauseLocked(e)
			return
		default:
			d.srv.logf("accept failed", "err", e)
			d.pauseLocked(e)
			return
		}
	}
}

// pauseLocked takes the listening socket out of the loop for a while, as net/http does when accept fails for
// want of descriptors: the waiting clients stay in the backlog until then.
func (d *door) pauseLocked(err error) {
	if d.paused {
		return
	}
	d.paused = true
	wait := d.backoff
	d.backoff = min(2*d.backoff, time.Second)
	d.srv.logf("cannot accept connections; retrying", "err", err, "retry_in", wait)
	d.p.unwatch(d.fd)
	time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.paused = false
		if !d.closed {
			_ = d.p.watch(d.fd, unix.EPOLLIN)
		}
	})
}

// sockaddrIP is the IP address of a socket address from accept.
func sockaddrIP(sa *unix.RawSockaddrAny) netip.Addr {
	switch sa.Addr.Family {
	case unix.AF_INET:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)).Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16((*unix.RawSockaddrInet6)(unsafe.Pointer(sa)).Addr).Unmap()
	}
	return netip.Addr{}
}

// start takes a new connection from ip into a loop, where its request is read. A connection over a cap
// (Server.admitLocked) is read only to be refused, if there are few such; otherwise it is closed at once.
func (d *door) start(fd int, ip netip.Addr) {
	s := d.srv
	c := &Conn{srv: s, fd: fd, p: s.pollers[int(s.next.Add(1))%len(s.pollers)], h: handshaking{}, door: d, state: stateHandshake}
	c.since = time.Now().UnixNano()
	s.mu.Lock()
	ok := !s.closing
	if ok {
		if r := s.admitLocked(c, ip); r != nil {
			if ok = s.refusing < maxRefusing; ok {
				s.refusing++
				c.acct, c.h = acctRefusing, refusing{r}
			} else {
				s.refused.Add(1)
			}
		}
	}
	if ok {
		s.conns[c] = struct{}{}
		s.handshakes++
	}
	s.mu.Unlock()
	if !ok {
		closeFD(fd)
		return
	}
	// As net.TCPConn does: small messages go out at once.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = c.enterLoop()
}

// onRequest reads the bytes of c's request. When the request is complete, the handshake is either answered here
// or handed to net/http with everything read. It reports false when c must be torn down.
func (c *Conn) onRequest(data []byte) bool {
	if len(c.in) > 0 || bytes.Index(data, []byte("\r\n\r\n")) < 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	end := bytes.Index(data, []byte("\r\n\r\n"))
	switch {
	case end < 0 && len(data) <= maxRequest:
		return true // more to come
	case end < 0:
		return c.handOff(data)
	}
	req, early := data[:end+4], data[end+4:]
	hs, ok := parseHandshake(req)
	var newHandler func(*Conn) Handler
	if ok {
		newHandler = c.door.accept(&hs.Request)
	}
	if newHandler == nil {
		return c.handOff(data)
	}
	if r, ok := c.h.(refusing); ok {
		c.srv.refused.Add(1)
		c.refuse(r.refusal)
		return false
	}
	if c.srv.trustedProxy(c.ip) { // from a reverse proxy: held to the caps under its client's address
		if r := c.srv.readdress(c, hs.forwardedFor, hs.forwarded); r != nil {
			c.srv.refused.Add(1)
			c.refuse(r)
			return false
		}
	}
	if !c.answerHandshake(hs.key) {
		return false
	}
	c.door, c.in = nil, nil
	if !c.srv.upgraded(c) {
		return false
	}
	c.h = newHandler(c)
	if len(early) > 0 {
		return c.onData(early)
	}
	return true
}

// refuse answers c's handshake with r; c is then torn down.
func (c *Conn) refuse(r *refusal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateHandshake {
		_, _ = writev(c.fd, r.response(), nil) // a few hundred bytes into a socket that has sent nothing yet
	}
}

// answerHandshake opens c and writes the 101; false if c was aborted meanwhile (shut down, timed out) or the
// write failed.
func (c *Conn) answerHandshake(key []byte) bool {
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.lastPing.Store(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateHandshake {
		return false
	}
	c.state = stateOpen
	c.since = now
	return c.writeLocked(switchingProtocols(key), nil, true)
}

// handOff gives c, with the bytes read so far, to net/http. It reports false: the loop is done with c.
func (c *Conn) handOff(read []byte) bool {
	d := c.door
	c.p.remove(c)
	fd, accepted, ok := c.release()
	if !ok {
		return false // aborted meanwhile: the caller tears c down
	}
	c.srv.remove(c)
	c.h, c.door, c.in = nil, nil, nil
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f) // a copy of the descriptor, in the Go runtime's poller
	_ = f.Close()
	if err != nil {
		c.srv.logf("cannot pass a connection to net/http", "err", err)
		return false
	}
	pc := newPrefixConn(nc, read, accepted.Add(c.srv.cfg.HandshakeTimeout))
	select {
	case d.handoff <- pc:
	default:
		// net/http is behind: wait for it on a goroutine, not in the loop.
		go func() {
			select {
			case d.handoff <- pc:
			case <-d.done:
				_ = pc.Close()
			}
		}()
	}
	return false
}

// release takes c's socket from it, for net/http, unless c was aborted meanwhile; since is when c was accepted.
func (c *Conn) release() (fd int, since time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateHandshake {
		return -1, time.Time{}, false
	}
	fd, since = c.fd, time.Unix(0, c.since)
	c.state, c.fd, c.inLoop = stateClosed, -1, false
	return fd, since, true
}

// prefixConn is a connection handed to net/http: it reads first what the loop read, and keeps the deadline of
// the loop's handshake timeout, which began when the connection was accepted, until the header of its first
// request has arrived whole. Without it a request handed over just before that timeout (its header grew past what
// the loop reads, say) would get net/http's own header timeout from then on, and be held about twice as long.
type prefixConn struct {
	net.Conn
	prefix []byte

	mu       sync.Mutex
	deadline time.Time // the latest read deadline until the first header is whole; zero from then on
	asked    time.Time // the read deadline last asked for, in force once the header is whole
	matched  int       // how much of "\r\n\r\n" ends what has been read so far
}

// newPrefixConn hands nc to net/http with read, the bytes of its first request read so far, and deadline, by
// which that request's header must have arrived.
func newPrefixConn(nc net.Conn, read []byte, deadline time.Time) *prefixConn {
	c := &prefixConn{Conn: nc, prefix: append([]byte(nil), read...), deadline: deadline}
	c.scan(read)
	if !c.deadline.IsZero() {
		_ = nc.SetReadDeadline(c.deadline)
	}
	return c
}

// scan follows the bytes read for the end of the first request's header; c.mu is held or c not yet shared.
func (c *prefixConn) scan(b []byte) bool {
	if c.deadline.IsZero() {
		return false
	}
	const end = "\r\n\r\n"
	for _, x := range b {
		switch {
		case x == end[c.matched]:
			c.matched++
		case x == '\r':
			c.matched = 1
		default:
			c.matched = 0
		}
		if c.matched == len(end) {
			c.deadline = time.Time{}
			return true
		}
	}
	return false
}

func (c *prefixConn) Read(b []byte) (int, error) {
	var n int
	var err error
	if len(c.prefix) > 0 {
		n = copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil // scanned when handed over
	}
	n, err = c.Conn.Read(b)
	c.mu.Lock()
	if c.scan(b[:n]) {
		_ = c.Conn.SetReadDeadline(c.asked) // the header is whole: the deadline net/http asked for applies
	}
	c.mu.Unlock()
	return n, err
}

// SetReadDeadline sets t, or the handshake's deadline if that comes first and the first header is not whole.
func (c *prefixConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = t
	if !c.deadline.IsZero() && (t.IsZero() || t.After(c.deadline)) {
		t = c.deadline
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *prefixConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// WriteTo keeps io.Copy from going around Read.
func (c *prefixConn) WriteTo(w io.Writer) (int64, error) {
	c.mu.Lock()
	direct := c.deadline.IsZero()
	c.mu.Unlock()
	if !direct {
		return io.Copy(w, struct{ io.Reader }{c}) // through Read, which follows the header
	}
	var total int64
	if len(c.prefix) > 0 {
		n, err := w.Write(c.prefix)
		total += int64(n)
		c.prefix = c.prefix[n:]
		if err != nil {
			return total, err
		}
	}
	n, err := io.Copy(w, c.Conn)
	return total + n, err
}

// tcpConn returns the TCP connection nc is, or is under a connection handed to net/http once what the loop
// read has been read again, so that Upgrade can detach it.
func tcpConn(nc net.Conn) (*net.TCPConn, bool) {
	if pc, ok := nc.(*prefixConn); ok && len(pc.prefix) == 0 {
		nc = pc.Conn
	}
	t, ok := nc.(*net.TCPConn)
	return t, ok
}

// refusing is the Handler of a connection whose request is read only to refuse it (a cap is reached).
type refusing struct{ *refusal }

func (refusing) OnText([]byte)  {}
func (refusing) OnBinary()      {}
func (refusing) OnTooLarge(int) {}
func (refusing) OnClose()       {}
