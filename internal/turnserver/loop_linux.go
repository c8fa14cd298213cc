package turnserver

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data plane's event loops (Linux).
//
// A goroutine woken for every packet (pion's read loop of a listening socket, or its goroutine per relay socket,
// each parked in Go's netpoller between packets) costs more at call-like rates than relaying the packet does: at
// 100 packets a second per client, every packet finds its goroutine parked, and the Go scheduler and the
// futex wake-ups of idle threads were a quarter of the server's CPU. So the UDP listening sockets and the relay
// sockets of UDP clients are raw non-blocking descriptors, out of Go's netpoller, served by a few loops (one per
// listening socket of a port: one per core by default), each with an epoll set of its own. A loop reads each ready
// socket with one recvmmsg (up to a batch of datagrams), relays channel data on the spot, and sends everything
// bound for clients in one sendmmsg per listening socket per turn of the loop: a busy loop handles many packets per
// wake-up, and no goroutine is woken for a packet on a channel.
//
// What is not channel data (STUN requests, Send and Data indications, datagrams from peers without a channel) is
// handed to pion as before: a copy goes on a queue that the socket's net.PacketConn, which pion reads, returns
// from ReadFrom. Its writes are plain sendto calls on the descriptor.

const (
	// loopBatch is the most datagrams one recvmmsg reads from a socket.
	loopBatch = 32
	// loopPool is the number of read buffers of a loop for datagrams from peers: those relayed to clients wait in
	// them for the turn's sendmmsg.
	loopPool = 64
	// loopBuffer is the size of a loop's read buffers: pion's largest datagram (its inbound MTU, 1600 bytes, less
	// one) behind room for a ChannelData header.
	loopBuffer = channelHeader + 1600
	// maxPeerDatagram is the longest datagram from a peer that is relayed: what fits in pion's 1,600-byte read
	// buffer of a relay socket behind a ChannelData header, as before the loops.
	maxPeerDatagram = 1600 - channelHeader
	// loopEvents is the most epoll events taken in one turn of a loop.
	loopEvents = 128
)

// udpSocket is a non-blocking UDP socket of the data plane, used with raw system calls. Any goroutine may send on
// it; mu is read-held while the descriptor is in use and write-held to close it, so that a descriptor number is
// never used after it was closed (and perhaps reused for another socket).
type udpSocket struct {
	mu     sync.RWMutex
	fd     int
	closed bool
	local  netip.AddrPort
	v6     bool
}

// openUDPSocket opens a non-blocking UDP socket bound to ip:port (port 0: a free one), with SO_REUSEPORT if reuse
// is set, asking for buffer bytes of receive and send buffer.
func openUDPSocket(ip netip.Addr, port int, reuse bool, buffer int) (*udpSocket, error) {
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("turnserver: opening a UDP socket: %w", err)
	}
	fail := func(what string, err error) (*udpSocket, error) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("turnserver: UDP socket on %v: %s: %w", netip.AddrPortFrom(ip, uint16(port)), what, err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	if reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	setFDBuffers(fd, buffer)
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	u := &udpSocket{fd: fd, v6: family == unix.AF_INET6}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		u.local = netip.AddrPortFrom(netip.AddrFrom4(b.Addr), uint16(b.Port))
	case *unix.SockaddrInet6:
		u.local = netip.AddrPortFrom(netip.AddrFrom16(b.Addr), uint16(b.Port))
	}
	return u, nil
}

// setFDBuffers asks for size bytes of receive and send buffer: beyond the system's limit if the process may
// (SO_RCVBUFFORCE needs CAP_NET_ADMIN), else up to it.
func setFDBuffers(fd, size int) {
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], size) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], size)
		}
	}
}

// sendTo sends b to to, without blocking: a datagram that does not fit in the socket's send buffer is dropped, as
// a router drops what it cannot queue. It allocates nothing.
func (u *udpSocket) sendTo(b []byte, to netip.AddrPort) error {
	var sa unix.RawSockaddrInet6
	salen := u.sockaddr(&sa, to)
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.closed {
		return errSocketClosed
	}
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(u.fd), uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&sa)), uintptr(salen))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return e
		}
	}
}

var errSocketClosed = errors.New("turnserver: use of a closed UDP socket")

// sockaddr writes to into sa as the socket's family takes it (an IPv4 address as IPv4-mapped on an IPv6 socket),
// and returns its length. An address's zone is not kept, and needs not be: the server listens on no link-local
// address, and the peer filter denies link-local peers.
func (u *udpSocket) sockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort) uint32 {
	*sa = unix.RawSockaddrInet6{} // a reused one may hold another address's flow label and scope
	port := to.Port()
	if !u.v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = to.Addr().Unmap().As4()
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Addr = to.Addr().As16()
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unix.SizeofSockaddrInet6
}

// sockaddrAddr reads the address a datagram came from out of sa, IPv4-mapped addresses unmapped.
func sockaddrAddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port := uint16(p[0])<<8 | uint16(p[1])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
}

// close closes the socket once no one is using it.
func (u *udpSocket) close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	return unix.Close(u.fd)
}

// readBatch reads up to len(b.msgs) datagrams from the socket into b, without blocking, and returns how many.
func (u *udpSocket) readBatch(msgs []unix.Mmsghdr) int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.closed || len(msgs) == 0 {
		return 0
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(u.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(n)
		case unix.EINTR:
			continue
		default: // EAGAIN: nothing to read; or an error the socket reports (ICMP): nothing read either
			return 0
		}
	}
}

// writeBatch sends the datagrams of msgs, without blocking: one the socket refuses (a full send buffer) is
// dropped, and the rest still sent. It returns the bytes sent.
func (u *udpSocket) writeBatch(msgs []unix.Mmsghdr) (bytes int) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	for len(msgs) > 0 && !u.closed {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(u.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
		case e != 0 || n == 0:
			msgs = msgs[1:] // the first could not be sent: dropped
		default:
			for i := range int(n) {
				bytes += int(msgs[i].Len)
			}
			msgs = msgs[n:]
		}
	}
	return bytes
}

// batch is a set of datagram buffers with their headers for recvmmsg and sendmmsg.
type batch struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte
}

func newBatch(n, size int) *batch {
	b := &batch{msgs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n), bufs: make([][]byte, n)}
	for i := range n {
		b.bufs[i] = make([]byte, size)
	}
	return b
}

// prepareRead sets up entries i to j to read datagrams into their buffers from offset off on.
func (b *batch) prepareRead(i, j, off int) {
	for k := i; k < j; k++ {
		buf := b.bufs[k][off:]
		b.iovs[k].Base = &buf[0]
		b.iovs[k].SetLen(len(buf))
		h := &b.msgs[k].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[k]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &b.iovs[k]
		h.SetIovlen(1)
		h.Control, h.Controllen, h.Flags = nil, 0, 0
		b.msgs[k].Len = 0
	}
}

// reset makes the first n entries, filled by a read, ready to be read into again: the kernel wrote their
// address lengths and flags.
func (b *batch) reset(n int) {
	for k := range n {
		b.msgs[k].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.msgs[k].Hdr.Flags = 0
	}
}

// dataLoop is one of the data plane's event loops.
type dataLoop struct {
	s         *Server
	index     int
	epfd      int
	epollFile *os.File           // epfd, registered with Go's netpoller
	epoll     syscall.RawConn    // epollFile's, to wait for events
	awaitFn   func(uintptr) bool // l.await, made once (a method value made per wait would be allocated)
	ready     int                // events found by await
	wake      int                // an eventfd that wakes the loop to stop
	kick      int                // a timerfd that wakes the loop loopKick after it parked, if armed
	kickSpec  unix.ItimerSpec    // loopKick, one-shot
	worked    bool               // the last turn had events other than the timer's: arm it when parking
	started   time.Time          // when the loop was made: kickArmed counts from it (the monotonic clock)
	kickArmed time.Duration      // when the timer was last armed
	stop      atomic.Bool
	done      chan struct{}

	mu    sync.Mutex // guards items and next
	items map[uint32]loopItem
	next  uint32

	// Touched by the loop's goroutine only.
	events  []unix.EpollEvent
	in      *batch     // datagrams from clients
	out     *batch     // datagrams from peers; the first pending are ChannelData bound for clients through outTo
	pending int        // datagrams in out waiting for sendmmsg
	outTo   *udpSocket // the listening socket they are sent from

	// ChannelData bound for one TCP client, gathered from a relay socket's batch to be written with one sendmsg
	// (the frames stay in out's buffers until then).
	tcpTo   *tcpLoopConn
	tcpIovs []unix.Iovec
	tcpMsg  unix.Msghdr
	// Data from one client (of a TCP connection's read) bound for peers, sent with one sendmmsg from its relay
	// socket (the data stay in the read buffer until then).
	peerFrom   *relayConn
	peerOut    *batch
	peerN      int
	tcpScratch []byte // what a TCP connection's read brings, behind the start of a frame from the read before
}

// wakeToken is the epoll token of a loop's eventfd, kickToken its timerfd's; sockets get the others.
const (
	wakeToken = 0
	kickToken = 1
)

// loopKick is how long a loop that had work parks before its timerfd wakes it. The loop's goroutine waits in
// Go's netpoller on the epoll descriptor, which Go watches edge-triggered; an event that comes while the loop's
// own epoll_pwait is taking the ready ones (and so returns without it) can wake the netpoller when the epoll set
// does not look ready yet, and then no other edge comes for it: measured at UDP saturation, a loop parked with
// events pending for 30-330 ms, its clients' packets held that long. So a loop that parks after a turn with
// events arms the timer (one-shot, re-armed at each such park): a miss costs at most about loopKick. A loop with
// nothing to do does not arm it, so an idle server is not woken (a periodic timer cost 3 % of a core, idle).
const loopKick = 5 * time.Millisecond

func newDataLoop(s *Server, index int) (*dataLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("turnserver: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeToken}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	kick, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("turnserver: timerfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, kick, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: kickToken}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		_ = unix.Close(kick)
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	// The epoll descriptor is itself pollable: non-blocking, Go's netpoller waits on it for the loop.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		_ = unix.Close(kick)
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "turn-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		_ = unix.Close(wake)
		_ = unix.Close(kick)
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	l := &dataLoop{
		s: s, index: index, epfd: epfd, epollFile: f, epoll: raw, wake: wake, kick: kick, done: make(chan struct{}),
		items: make(map[uint32]loopItem), next: kickToken + 1,
		kickSpec: unix.ItimerSpec{Value: unix.NsecToTimespec(int64(loopKick))}, started: time.Now(),
		events: make([]unix.EpollEvent, loopEvents),
		in:     newBatch(loopBatch, loopBuffer),
		out:    newBatch(loopPool, loopBuffer),

		tcpIovs:    make([]unix.Iovec, 0, loopBatch),
		peerOut:    newBatch(loopBatch, 0),
		tcpScratch: make([]byte, tcpLoopRead),
	}
	l.awaitFn = l.await
	l.in.prepareRead(0, loopBatch, 0)
	return l, nil
}

// startDataLoops starts n loops.
func startDataLoops(s *Server, n int) ([]*dataLoop, error) {
	var loops []*dataLoop
	for i := range n {
		l, err := newDataLoop(s, i)
		if err != nil {
			stopDataLoops(loops)
			return nil, err
		}
		loops = append(loops, l)
		go l.run()
	}
	return loops, nil
}

// stopDataLoops stops the loops and waits for them to return. Their sockets are closed by their owners.
func stopDataLoops(loops []*dataLoop) {
	for _, l := range loops {
		l.stop.Store(true)
		one := [8]byte{1}
		_, _ = unix.Write(l.wake, one[:])
	}
	for _, l := range loops {
		<-l.done
		_ = l.epollFile.Close()
		_ = unix.Close(l.wake)
		_ = unix.Close(l.kick)
	}
}

// register gives it a token of the loop, without putting anything in its epoll set yet.
func (l *dataLoop) register(it loopItem) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	token := l.next
	l.next++
	for l.next == wakeToken || l.next == kickToken {
		l.next++
	}
	l.items[token] = it
	return token
}

// set puts it under token, a token register gave.
func (l *dataLoop) set(token uint32, it loopItem) {
	l.mu.Lock()
	l.items[token] = it
	l.mu.Unlock()
}

// watchTCP adds (op EPOLL_CTL_ADD), changes (EPOLL_CTL_MOD) or removes (EPOLL_CTL_DEL) the TCP connection fd in
// the loop's epoll set: readable, and writable too if writable.
func (l *dataLoop) watchTCP(fd int, token uint32, op int, writable bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(token)}
	if writable {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(l.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("turnserver: epoll: %w", err)
	}
	return nil
}

// add puts a socket in the loop's epoll set and returns its token.
func (l *dataLoop) add(it loopItem) (uint32, error) {
	token := l.register(it)
	it.sock.mu.RLock()
	defer it.sock.mu.RUnlock()
	if it.sock.closed {
		return token, errSocketClosed
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, it.sock.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(token)}); err != nil {
		l.remove(token, nil)
		return token, fmt.Errorf("turnserver: epoll: %w", err)
	}
	return token, nil
}

// remove takes the socket of token out of the loop (sock, if not nil, is still open).
func (l *dataLoop) remove(token uint32, sock *udpSocket) {
	l.mu.Lock()
	delete(l.items, token)
	l.mu.Unlock()
	if sock != nil {
		sock.mu.RLock()
		if !sock.closed {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, sock.fd, nil)
		}
		sock.mu.RUnlock()
	}
}

func (l *dataLoop) item(token uint32) (loopItem, bool) {
	l.mu.Lock()
	it, ok := l.items[token]
	l.mu.Unlock()
	return it, ok
}

func (l *dataLoop) run() {
	defer close(l.done)
	for !l.stop.Load() {
		// Wait for events in Go's netpoller: await first looks without waiting (under load events are usually
		// ready already), and only when there are none does the goroutine park until the epoll set has some. It
		// holds no thread blocked in a system call (which would keep the runtime's monitor thread waking every
		// 20 µs to take its processor back).
		if err := l.epoll.Read(l.awaitFn); err != nil {
			l.s.cfg.Logger.Error("TURN data loop: waiting for events failed; stopping", "err", err)
			return
		}
		for i := range l.ready {
			token := uint32(l.events[i].Fd)
			if token == kickToken {
				var b [8]byte
				_, _ = unix.Read(l.kick, b[:])
				continue
			}
			l.worked = true
			if token == wakeToken {
				continue // only stopping wakes the loop: the eventfd stays readable from then on
			}
			it, ok := l.item(token)
			if !ok {
				continue
			}
			switch {
			case it.tcp != nil:
				if ev := l.events[i].Events; ev&unix.EPOLLOUT != 0 {
					it.tcp.writable()
				}
				if ev := l.events[i].Events; ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					it.tcp.readable()
				}
			case it.relay != nil:
				l.readRelay(it)
			default:
				l.readListening(it)
			}
		}
		l.flush() // what is bound for clients goes before the loop waits again
	}
}

// poll returns the number of events ready in l.events, without waiting.
func (l *dataLoop) poll() int {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		switch e {
		case 0:
			return int(n)
		case unix.EINTR:
			continue
		default:
			return 0
		}
	}
}

// await is called by Go's netpoller (through l.epoll.Read) until it reports true: when events are ready, their
// number in l.ready.
func (l *dataLoop) await(uintptr) bool {
	l.ready = l.poll()
	if l.ready == 0 && l.worked {
		// About to park after work: the timer wakes the loop if no edge does, loopKick after it was armed. Armed
		// less than loopKick/5 ago, it is left as it is (it goes off within loopKick of now all the same): at
		// call-like rates a loop parks thousands of times a second, and re-arming is a system call.
		l.worked = false
		if now := time.Since(l.started); now-l.kickArmed >= loopKick/5 {
			l.kickArmed = now
			_, _, _ = unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(l.kick), 0, uintptr(unsafe.Pointer(&l.kickSpec)), 0, 0, 0)
		}
	}
	return l.ready > 0
}

// readListening reads a batch of datagrams from clients on a listening socket: channel data is relayed to peers
// at once, the rest queued for pion.
func (l *dataLoop) readListening(it loopItem) {
	b := l.in
	n := it.sock.readBatch(b.msgs)
	defer b.reset(n)
	pc := it.listen
	for i := range n {
		size := int(b.msgs[i].Len)
		if b.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 || size >= loopBuffer-channelHeader {
			continue // longer than pion's inbound MTU: pion would drop it too
		}
		from := sockaddrAddr(&b.names[i])
		p := b.bufs[i][:size]
		if l.s.channelPath && isChannelData(p) {
			if rc := l.s.udpRelayOf(pc.local, from); rc != nil && l.fromClient(rc, p) {
				continue
			}
		}
		pc.queue(p, from)
	}
	l.flushPeers() // before the buffers are read into again
}

// fromClient relays the ChannelData frame p from rc's client, as relayConn.fromClient does, but gathers what goes
// to peers for one sendmmsg from rc's relay socket (flushPeers), which the caller makes before p's buffer is used
// again. It reports false when the frame is pion's to handle.
func (l *dataLoop) fromClient(rc *relayConn, p []byte) bool {
	data, peer, route := rc.routeFromClient(p)
	switch {
	case route == routeToPion:
		return false
	case route == routeDrop:
		return true
	case rc.raw == nil:
		return rc.fromClient(p)
	}
	l.toPeer(rc, data, peer)
	return true
}

// readRelay reads a batch of datagrams from peers on a relay socket: those of a peer with a channel are made
// ChannelData in place, to be sent to the client with the turn's sendmmsg; the rest are queued for pion.
func (l *dataLoop) readRelay(it loopItem) {
	if loopPool-l.pending < loopBatch/2 {
		l.flush()
	}
	b := l.out
	first, end := l.pending, min(l.pending+loopBatch, loopPool)
	b.prepareRead(first, end, channelHeader)
	n := it.sock.readBatch(b.msgs[first:end])
	rc := it.relay
	// Counted before anything is handed on: whoever sees a datagram relayed sees it counted.
	var bytes int
	for i := first; i < first+n; i++ {
		bytes += int(b.msgs[i].Len)
	}
	if bytes > 0 {
		l.s.metrics.fromPeer.Add(float64(bytes))
	}
	for i := first; i < first+n; i++ {
		size := int(b.msgs[i].Len)
		if b.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 || size > maxPeerDatagram {
			continue // too long to be relayed in pion's 1,600-byte buffer with a ChannelData header: dropped
		}
		from := sockaddrAddr(&b.names[i])
		if l.s.channelPath {
			if t := rc.routes.Load(); t != nil {
				if r, ok := t.byPeer(from); ok {
					if r.toClient == dropNoPerm || l.toClient(rc, i, size, r.number) {
						continue
					}
				}
			}
		}
		rc.queue(b.bufs[i][channelHeader:channelHeader+size], from)
	}
	l.flushTCP() // the frames are in buffers the next read reuses
}

// queueTCP adds frame, in one of out's buffers, to what is written to w with the next flushTCP.
func (l *dataLoop) queueTCP(w *tcpLoopConn, frame []byte) {
	if l.tcpTo != w || len(l.tcpIovs) == cap(l.tcpIovs) {
		l.flushTCP()
	}
	l.tcpTo = w
	l.tcpIovs = append(l.tcpIovs, unix.Iovec{Base: &frame[0]})
	l.tcpIovs[len(l.tcpIovs)-1].SetLen(len(frame))
}

// flushTCP writes the frames queueTCP gathered to their connection.
func (l *dataLoop) flushTCP() {
	if len(l.tcpIovs) == 0 {
		return
	}
	l.tcpTo.writeMediaBatch(l.tcpIovs, &l.tcpMsg)
	clear(l.tcpIovs) // no pointers into the buffers kept
	l.tcpIovs, l.tcpTo = l.tcpIovs[:0], nil
}

// toPeer adds data from rc's client, in a buffer that stays as it is until the next flushPeers, to what rc's
// relay socket sends to peer with the next flushPeers.
func (l *dataLoop) toPeer(rc *relayConn, data []byte, peer netip.AddrPort) {
	if l.peerN > 0 && (l.peerFrom != rc || l.peerN == len(l.peerOut.msgs)) {
		l.flushPeers()
	}
	b, k := l.peerOut, l.peerN
	l.peerFrom = rc
	l.peerN++
	b.iovs[k].Base = unsafe.SliceData(data)
	b.iovs[k].SetLen(len(data))
	h := &b.msgs[k].Hdr
	h.Name = (*byte)(unsafe.Pointer(&b.names[k]))
	h.Namelen = rc.raw.sockaddr(&b.names[k], peer)
	h.Iov = &b.iovs[k]
	h.SetIovlen(1)
	b.msgs[k].Len = 0
}

// flushPeers sends what toPeer gathered, in one sendmmsg.
func (l *dataLoop) flushPeers() {
	if l.peerN == 0 {
		return
	}
	rc, n := l.peerFrom, l.peerN
	bytes := rc.raw.writeBatch(l.peerOut.msgs[:n])
	for k := range n {
		l.peerOut.iovs[k].Base = nil // no pointers into the read buffer kept
	}
	l.peerN, l.peerFrom = 0, nil
	l.s.metrics.toPeer.Add(float64(bytes))
	rc.channelPackets.Add(uint64(n))
}

// toClient makes the datagram in l.out's buffer i ChannelData on channel number and moves it to the pending ones,
// to be sent to rc's client; for a TCP client, it writes it to the client's connection at once (tcploop_linux.go).
// It reports false when rc has no client (yet), or one the loops do not write to.
func (l *dataLoop) toClient(rc *relayConn, i, size int, number uint16) bool {
	link := rc.link.Load()
	if link == nil {
		return false
	}
	if link.tcp != nil {
		w := link.tcp.lc
		if w == nil {
			return false
		}
		p := l.out.bufs[i]
		p[0], p[1] = byte(number>>8), byte(number)
		p[2], p[3] = byte(size>>8), byte(size)
		framed := channelHeader + (size+3)&^3 // padded to a multiple of 4 bytes over TCP (RFC 8656, section 12.5)
		clear(p[channelHeader+size : framed])
		rc.channelPackets.Add(1)
		l.queueTCP(w, p[:framed])
		return true
	}
	if link.sock == nil {
		return false
	}
	if l.pending > 0 && l.outTo != link.sock {
		// Another listening socket (of another address): send what waits first. Buffer i is past the pending ones
		// and stays as it is.
		l.flush()
		l.swapOut(0, i)
		i = 0
	}
	b := l.out
	p := b.bufs[i]
	p[0], p[1] = byte(number>>8), byte(number)
	p[2], p[3] = byte(size>>8), byte(size)
	l.swapOut(l.pending, i)
	k := l.pending
	l.pending++
	l.outTo = link.sock
	b.iovs[k].Base = &b.bufs[k][0]
	b.iovs[k].SetLen(channelHeader + size)
	h := &b.msgs[k].Hdr
	h.Name = (*byte)(unsafe.Pointer(&b.names[k]))
	h.Namelen = link.sock.sockaddr(&b.names[k], link.addr)
	h.Iov = &b.iovs[k]
	h.SetIovlen(1)
	rc.channelPackets.Add(1)
	return true
}

// swapOut exchanges the buffers of l.out's entries i and j.
func (l *dataLoop) swapOut(i, j int) {
	if i != j {
		l.out.bufs[i], l.out.bufs[j] = l.out.bufs[j], l.out.bufs[i]
	}
}

// flush sends the pending ChannelData to clients.
func (l *dataLoop) flush() {
	if l.pending == 0 {
		return
	}
	l.outTo.writeBatch(l.out.msgs[:l.pending])
	l.pending, l.outTo = 0, nil
}
