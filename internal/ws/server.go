package ws

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/rfc6455"
)

// Config holds the limits of a Server. A zero field takes the default named beside it.
type Config struct {
	MaxMessage int // largest message accepted, in bytes; default 64 KiB
	SendQueue  int // bytes that may wait for a slow client before it is dropped; default 1 MiB
	// TotalQueue bounds the bytes waiting for all slow clients together, so that many connections that stop
	// reading cannot exhaust the server's memory: past it, a connection whose queue would grow is dropped as
	// slow. Default 256 MiB.
	TotalQueue   int
	PingInterval time.Duration // a connection silent this long is pinged; default 20 s
	IdleTimeout  time.Duration // a connection silent this long is dropped; default 60 s
	CloseTimeout time.Duration // how long a closing handshake may take; default 3 s
	WriteTimeout time.Duration // longest blocking write (TLS connections); default 10 s
	// HandshakeTimeout bounds how long the epoll loop waits for a request to arrive whole (Listen); default 10 s.
	HandshakeTimeout time.Duration
	Pollers          int // epoll loops; default half of GOMAXPROCS, at least one
	// NoEpoll serves every connection with goroutines, as TLS connections are.
	NoEpoll bool
	// ParkIdleLoops: an epoll loop with nothing to do waits parked in the Go runtime's network poller instead of
	// in a blocking epoll_wait. For a process whose other goroutines keep the other processors busy (a cluster
	// node's Redis client): the runtime's monitor takes the processor of a loop blocked in a system call
	// meanwhile, hands it on, and keeps polling every 20 µs. Parked, the loop leaves it nothing to take: in the
	// cluster relay benchmark a node woke the monitor 40% less and switched threads 30% less per message, and
	// spent 20-30% less CPU time on it (BENCHMARKS.md, "Cluster"). Off: a single node waits as it always has.
	ParkIdleLoops bool

	// LoginTimeout: a connection on which Conn.LoggedIn has not been called this long after its handshake is
	// closed with 1008 and the reason "log in within 60s". Default 60 s (a page opens its socket when it loads,
	// and a person then types a name).
	LoginTimeout time.Duration
	// MaxConns bounds the connections held: open ones and those whose request an epoll loop is reading. Default
	// DefaultMaxConns of the open-file limit.
	MaxConns int
	// MaxUnlogged bounds the connections that have not logged in (or not finished their request); default half
	// of MaxConns.
	MaxUnlogged int
	// MaxConnsPerAddr and MaxUnloggedPerAddr are MaxConns and MaxUnlogged for one client address (an IPv4 address,
	// or an IPv6 /64); defaults 256 and 32, negative for no limit. Loopback addresses are exempt unless
	// LimitLoopback is set (a reverse proxy on the same host, the load generator, the echo peer).
	MaxConnsPerAddr    int
	MaxUnloggedPerAddr int
	LimitLoopback      bool
	// TrustedProxies are the reverse proxies (addresses and prefixes) whose connections carry their client's
	// address in X-Forwarded-For or Forwarded (proxy.go): such a connection is held to the per-address caps, and
	// RemoteIP gives, the client's address, once its handshake is read. Default none: the headers are ignored.
	TrustedProxies []netip.Prefix
	// MessageTimeout: a message (or a frame) whose first bytes have come must arrive whole within it, or the
	// connection is closed with 1008. Default 30 s.
	MessageTimeout time.Duration
	// TotalPartial bounds the bytes held for frames, messages and handshakes not yet whole, over all connections:
	// past it, a connection whose buffer would grow is closed with 1013 (try again later). Default 64 MiB.
	TotalPartial int
	// Logger, if not nil, is told of trouble the server cannot report otherwise (accept failing).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxMessage, 64<<10)
	def(&c.SendQueue, 1<<20)
	def(&c.TotalQueue, 256<<20)
	// Half the processors, so that a loop waking from epoll_wait usually finds an idle processor to run on at
	// once (the Go scheduler takes a processor away from a goroutine blocked in a system call when none is idle,
	// and giving it back costs more than the message). Measured in BENCHMARKS.md: on 2 cores one loop spends
	// about half the CPU per message of two.
	def(&c.Pollers, max(1, runtime.GOMAXPROCS(0)/2))
	defDur(&c.PingInterval, 20*time.Second)
	defDur(&c.IdleTimeout, 60*time.Second)
	defDur(&c.CloseTimeout, 3*time.Second)
	defDur(&c.WriteTimeout, 10*time.Second)
	defDur(&c.HandshakeTimeout, 10*time.Second)
	defDur(&c.LoginTimeout, 60*time.Second)
	defDur(&c.MessageTimeout, 30*time.Second)
	def(&c.MaxConns, DefaultMaxConns(openFileLimit()))
	def(&c.MaxUnlogged, max(c.MaxConns/2, 1))
	def(&c.MaxConnsPerAddr, 256)
	def(&c.MaxUnloggedPerAddr, 32)
	def(&c.TotalPartial, 64<<20)
	switch {
	case c.MaxMessage < 0, c.SendQueue < 0, c.TotalQueue < 0, c.Pollers < 0, c.MaxConns < 0, c.MaxUnlogged < 0, c.TotalPartial < 0:
		return errors.New("ws: limits must not be negative")
	case c.PingInterval < 0, c.IdleTimeout < 0, c.CloseTimeout < 0, c.WriteTimeout < 0, c.HandshakeTimeout < 0, c.LoginTimeout < 0, c.MessageTimeout < 0:
		return errors.New("ws: durations must not be negative")
	case c.IdleTimeout <= c.PingInterval:
		return fmt.Errorf("ws: the idle timeout (%v) must be longer than the ping interval (%v)", c.IdleTimeout, c.PingInterval)
	}
	return nil
}

// Server accepts WebSocket connections and keeps them alive.
type Server struct {
	cfg     Config
	pollers []*poller
	next    atomic.Uint32

	mu         sync.Mutex
	conns      map[*Conn]struct{} // open connections, and those whose request a loop is reading
	handshakes int                // how many of conns are still being read
	held       int                // connections counted against MaxConns (see admitLocked)
	unlogged   int                // of which have not logged in
	refusing   int                // connections read only to be refused
	addrs      map[addrKey]*addrCount
	doors      []*door // listeners from Listen
	closing    bool
	goingAway  []byte        // Shutdown's close frame, for a handshake answered as it began (goAway)
	drained    chan struct{} // closed when conns is empty during shutdown
	stop       chan struct{}
	wg         sync.WaitGroup
	started    bool

	slowDrops atomic.Uint64
	panics    atomic.Uint64
	queued    atomic.Int64 // bytes in the queues of all connections

	partial       atomic.Int64 // bytes held for unfinished frames, messages and requests (Conn.account)
	partialDrops  atomic.Uint64
	refused       atomic.Uint64
	loginTimeouts atomic.Uint64
	loginReason   string // the close reason of a login timeout
	messageReason string // the close reason of a message timeout
}

// NewServer checks cfg and returns a Server; Start brings it up.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, conns: make(map[*Conn]struct{}), addrs: make(map[addrKey]*addrCount), stop: make(chan struct{}),
		loginReason:   "log in within " + seconds(cfg.LoginTimeout),
		messageReason: "a message must arrive whole within " + seconds(cfg.MessageTimeout),
	}, nil
}

// Start starts the epoll loops (where the platform has them) and the keepalive sweeper.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("ws: server already started")
	}
	s.started = true
	if !s.cfg.NoEpoll {
		for i := 0; i < s.cfg.Pollers; i++ {
			p, err := newPoller(s)
			if errors.Is(err, errNoEpoll) {
				break
			}
			if err != nil {
				for _, p := range s.pollers {
					p.close()
				}
				s.pollers = nil
				return err
			}
			s.pollers = append(s.pollers, p)
		}
	}
	for _, p := range s.pollers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			p.run()
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sweep()
	}()
	return nil
}

// Len returns the number of open WebSocket connections.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) - s.handshakes
}

func (s *Server) logf(msg string, args ...any) {
	if s.cfg.Logger != nil {
		s.cfg.Logger.Warn(msg, args...)
	}
}

// SlowDrops returns how many connections were dropped because they did not read what was sent to them.
func (s *Server) SlowDrops() uint64 { return s.slowDrops.Load() }

// Panics returns how many panics were recovered while serving a connection (each closed that connection alone).
func (s *Server) Panics() uint64 { return s.panics.Load() }

// recovered reports a panic recovered while serving c, with the stack of the goroutine that panicked (it is
// called from the deferred function that recovered it), and contains it: c alone is closed, with 1011 (internal
// error) if it is open, and everything c's reader had half done is thrown away. It reports whether c's reader goes
// on reading (the closing handshake) rather than tearing c down at once.
func (c *Conn) recovered(v any, where string) bool {
	s := c.srv
	s.panics.Add(1)
	if s.cfg.Logger != nil {
		s.cfg.Logger.Error("panic while serving a WebSocket connection; that connection is closed", "in", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}
	if c.h == nil {
		return false // it happened in teardown: c is gone already
	}
	c.discard, c.ignore = true, true
	c.in, c.frag, c.fragOp, c.fragSize, c.skip = nil, nil, 0, 0, 0
	c.account()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateOpen:
		c.closeLocked(CloseInternal, "internal server error")
		return c.state != stateClosed
	case stateClosing:
		return true
	}
	return false
}

// Queued returns how many bytes wait in the queues of all connections for clients to read them.
func (s *Server) Queued() int64 { return s.queued.Load() }

// ErrRefused is returned by Upgrade for a handshake refused at a cap on connections (Config.MaxConns and the
// others); the client was answered 503 or 429.
var ErrRefused = errors.New("ws: too many connections")

// ErrNotWebSocket is returned by Upgrade for a request that is not a WebSocket handshake.
var ErrNotWebSocket = errors.New("ws: not a WebSocket handshake")

// IsWebSocket reports whether r asks for a WebSocket upgrade.
func IsWebSocket(r *http.Request) bool {
	return rfc6455.HeaderHasToken(r.Header, "Connection", "upgrade") && rfc6455.HeaderHasToken(r.Header, "Upgrade", "websocket")
}

// Upgrade completes the WebSocket handshake of r and takes the connection over. newHandler is called with the
// new Conn before any message is read, and its Handler gets the connection's events. On failure Upgrade has
// already answered the request with an HTTP error.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request, newHandler func(*Conn) Handler) error {
	if r.Method != http.MethodGet || !IsWebSocket(r) {
		http.Error(w, "this is a WebSocket endpoint: connect with a WebSocket client", http.StatusUpgradeRequired)
		return ErrNotWebSocket
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "unsupported WebSocket version (13 is supported)", http.StatusUpgradeRequired)
		return ErrNotWebSocket
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		http.Error(w, "bad Sec-WebSocket-Key", http.StatusBadRequest)
		return ErrNotWebSocket
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "this connection cannot be upgraded", http.StatusInternalServerError)
		return errors.New("ws: response writer is not a Hijacker")
	}
	c := &Conn{srv: s, fd: -1, resumed: make(chan struct{}, 1)}
	ip, err := s.requestClient(r)
	if err != nil {
		s.refused.Add(1)
		refuseForwarded.write(w)
		return err
	}
	s.mu.Lock()
	closing := s.closing
	var refused *refusal
	if !closing {
		refused = s.admitLocked(c, ip)
	}
	s.mu.Unlock()
	switch {
	case closing:
		http.Error(w, "the server is shutting down", http.StatusServiceUnavailable)
		return errClosed
	case refused != nil:
		s.refused.Add(1)
		refused.write(w)
		return ErrRefused
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		s.remove(c)
		return fmt.Errorf("ws: hijack: %w", err)
	}
	var early []byte // bytes the client sent after its handshake, already read by net/http
	if n := brw.Reader.Buffered(); n > 0 {
		early = make([]byte, n)
		_, _ = brw.Reader.Read(early)
	}
	if err := s.handshake(nc, brw.Writer, key); err != nil {
		_ = nc.Close()
		s.remove(c)
		return err
	}

	now := time.Now().UnixNano()
	c.since = now
	c.lastRead.Store(now)
	c.lastPing.Store(now)

	var p *poller
	if len(s.pollers) > 0 {
		p = s.pollers[int(s.next.Add(1))%len(s.pollers)]
	}
	if tcp, ok := tcpConn(nc); ok && p != nil {
		fd, err := detach(tcp)
		if err != nil {
			_ = nc.Close()
			s.remove(c)
			return err
		}
		c.fd, c.p = fd, p
	} else {
		c.nc = nc
		_ = nc.SetDeadline(time.Time{})
	}
	if !c.startHandler(newHandler) {
		c.writeRaw(closeFrame(CloseInternal, "internal server error"))
		c.h = handshaking{}
		c.teardown()
		return errors.New("ws: the handler panicked")
	}
	if !s.add(c) {
		s.goAway(c)
		c.teardown()
		return errClosed
	}
	// What came early is read here, before anything else can read: the handler sees messages in order.
	if len(early) > 0 && !c.onDataSafely(early) {
		c.teardown()
		return nil
	}
	if c.fd >= 0 {
		return c.enterLoop()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c.readLoop()
	}()
	return nil
}

// startHandler makes c's Handler; false if newHandler panicked (recovered, logged and counted).
func (c *Conn) startHandler(newHandler func(*Conn) Handler) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			c.srv.panics.Add(1)
			if l := c.srv.cfg.Logger; l != nil {
				l.Error("panic while starting a WebSocket connection's handler; that connection is closed", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	c.h = newHandler(c)
	return true
}

// enterLoop gives c, whose reader so far was the caller, to its epoll loop, which reads it from then on. c.mu is
// held while it is added, so that an abort either comes before (and c is torn down here) or finds c in the loop
// (and the loop tears it down).
func (c *Conn) enterLoop() error {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		c.teardown()
		return errClosed
	}
	err := c.p.add(c)
	c.inLoop = err == nil
	if c.inLoop && c.resumeOnEnter {
		c.resumeOnEnter = false
		c.p.resume(c)
	}
	c.mu.Unlock()
	if err != nil {
		c.teardown()
	}
	return err
}

func (s *Server) handshake(nc net.Conn, w *bufio.Writer, key string) error {
	_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	w.Write(switchingProtocols([]byte(key)))
	if err := w.Flush(); err != nil {
		return fmt.Errorf("ws: handshake: %w", err)
	}
	_ = nc.SetWriteDeadline(time.Time{})
	return nil
}

// goAway sends c the close frame of Shutdown, which began after c's handshake was answered but before c was
// counted: the client has its 101, and hears why it goes as the others do, rather than the socket just closing.
// The caller then tears c down.
func (s *Server) goAway(c *Conn) {
	s.mu.Lock()
	frame := s.goingAway
	s.mu.Unlock()
	c.writeRaw(frame)
}

// writeRaw writes frame (if not nil) to a connection that is not yet served, before it is torn down.
func (c *Conn) writeRaw(frame []byte) {
	s := c.srv
	switch {
	case frame == nil:
	case c.fd >= 0:
		_, _ = writev(c.fd, frame, nil) // a few bytes into a new socket: taken whole or not at all
	case c.nc != nil:
		_ = c.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, _ = c.nc.Write(frame)
	}
}

func (s *Server) add(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	if c.door != nil {
		s.handshakes++
	}
	return true
}

// upgraded counts c, whose handshake the loop has answered, as open; false if the server is shutting down.
func (s *Server) upgraded(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handshakes--
	return !s.closing
}

func (s *Server) remove(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok && c.door != nil {
		s.handshakes--
	}
	s.uncountLocked(c)
	delete(s.conns, c)
	if s.closing && len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// teardown releases a connection; it runs once, on the reading goroutine, and tells the handler last.
func (c *Conn) teardown() {
	h := c.h
	if h == nil {
		return // torn down already
	}
	c.h = nil
	c.mu.Lock()
	c.state = stateClosed
	c.out = nil
	c.count()
	fd := c.fd
	c.mu.Unlock()
	if fd >= 0 {
		if c.p != nil {
			c.p.remove(c)
		}
		closeFD(fd)
	} else if c.nc != nil {
		_ = c.nc.Close()
	}
	c.in, c.frag = nil, nil
	c.account()
	c.srv.remove(c)
	c.onClose(h)
}

// onClose tells h that its connection is gone; a panic there is contained like any other.
func (c *Conn) onClose(h Handler) {
	defer func() {
		if v := recover(); v != nil {
			c.recovered(v, "OnClose")
		}
	}()
	h.OnClose()
}

// onDataSafely is onData with a panic contained (net.Conn mode and Upgrade; the epoll loops have their own).
func (c *Conn) onDataSafely(data []byte) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = c.recovered(v, "reading")
		}
	}()
	return c.onData(data)
}

// readLoop reads a net.Conn-mode connection until it ends.
func (c *Conn) readLoop() {
	buf := make([]byte, 4096)
	for {
		if c.paused {
			select {
			case <-c.resumed:
			case <-c.srv.stop:
				c.teardown()
				return
			}
			c.paused = false
			if !c.onDataSafely(nil) { // what was read before the pause
				break
			}
			if c.paused {
				continue
			}
		}
		n, err := c.nc.Read(buf)
		if n > 0 && !c.onDataSafely(buf[:n]) {
			break
		}
		if err != nil {
			break
		}
	}
	c.teardown()
}

// sweep pings silent connections and drops dead ones and stuck closes.
func (s *Server) sweep() {
	period := min(s.cfg.PingInterval/4, s.cfg.HandshakeTimeout/2, s.cfg.LoginTimeout/2, s.cfg.MessageTimeout/2, time.Second)
	t := time.NewTicker(period)
	defer t.Stop()
	var batch []*Conn
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		batch = batch[:0]
		s.mu.Lock()
		for c := range s.conns {
			batch = append(batch, c)
		}
		s.mu.Unlock()
		for _, c := range batch {
			c.keepalive(now)
		}
		clear(batch)
	}
}

func (c *Conn) keepalive(now int64) {
	cfg := &c.srv.cfg
	last := c.lastRead.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state == stateHandshake && now-c.since > int64(cfg.HandshakeTimeout):
		c.abortLocked()
	case c.state == stateClosing && now-c.since > int64(cfg.CloseTimeout):
		c.abortLocked()
	case c.state == stateClosed:
		// Aborted, and its loop was told; should it still be here a close timeout later, tell the loop again.
		if c.inLoop && now-c.since > int64(cfg.CloseTimeout) {
			c.since = now
			c.p.reap(c)
		}
	case c.state != stateOpen:
	case now-last > int64(cfg.IdleTimeout):
		c.abortLocked()
	case !c.loggedIn && now-c.since > int64(cfg.LoginTimeout):
		c.srv.loginTimeouts.Add(1)
		c.closeLocked(ClosePolicy, c.srv.loginReason)
	case c.msgStart.Load() != 0 && now-c.msgStart.Load() > int64(cfg.MessageTimeout):
		c.closeLocked(ClosePolicy, c.srv.messageReason)
	case now-last >= int64(cfg.PingInterval) && now-c.lastPing.Load() >= int64(cfg.PingInterval):
		c.lastPing.Store(now)
		c.writeFrameLocked(rfc6455.OpPing, nil)
	}
}

// Shutdown closes every connection with code and reason and waits until they are gone or ctx is done (then the
// rest are dropped). New upgrades are refused from the start. Then it stops the server's goroutines.
func (s *Server) Shutdown(ctx context.Context, code int, reason string) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errors.New("ws: already shut down")
	}
	s.closing = true
	s.goingAway = closeFrame(code, reason)
	drained := make(chan struct{})
	if len(s.conns) == 0 {
		close(drained)
	} else {
		s.drained = drained
	}
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	doors := s.doors
	s.mu.Unlock()

	for _, d := range doors {
		_ = d.Close()
	}
	for _, c := range conns {
		c.Close(code, reason)
	}
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range conns {
			c.mu.Lock()
			c.abortLocked()
			c.mu.Unlock()
		}
		<-drained
	}
	close(s.stop)
	for _, p := range s.pollers {
		p.wake()
	}
	s.wg.Wait()
	for _, p := range s.pollers {
		p.close()
	}
	return err
}
