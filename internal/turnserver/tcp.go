package turnserver

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxTCPFrame is the largest STUN message or ChannelData frame accepted on a TCP connection: pion drops any
// message of its inbound MTU (1600 bytes) or more, so a longer frame is only buffered (up to 64 KiB) to be dropped.
const maxTCPFrame = 1600 - 1

// stunMagicCookie is the fixed second word of every STUN message (RFC 8489).
const stunMagicCookie = 0x2112A442

var (
	errTCPGarbage  = errors.New("turnserver: TCP stream is neither STUN nor ChannelData")
	errTCPOversize = errors.New("turnserver: TCP frame longer than any message the server handles")
)

// tcpLimits counts the TCP connections of all the server's listeners.
type tcpLimits struct {
	max, maxPerAddr int // negative: no cap

	mu      sync.Mutex
	total   int
	perAddr map[netip.Addr]int
	conns   map[connKey]*trackedConn
}

// connKey is a TCP connection's remote and local addresses, the 5-tuple pion keys its allocation by.
type connKey struct{ remote, local netip.AddrPort }

func newTCPLimits(max, maxPerAddr int) tcpLimits {
	return tcpLimits{max: max, maxPerAddr: maxPerAddr, perAddr: make(map[netip.Addr]int), conns: make(map[connKey]*trackedConn)}
}

// admit counts a new connection from ip, or reports which cap it is over.
func (t *tcpLimits) admit(c *trackedConn) (limit string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.max >= 0 && t.total >= t.max:
		return limitTCPConns
	case t.maxPerAddr >= 0 && t.perAddr[clientNet(c.key.remote.Addr())] >= t.maxPerAddr:
		return limitTCPAddress
	}
	t.total++
	t.perAddr[clientNet(c.key.remote.Addr())]++
	t.conns[c.key] = c
	return ""
}

func (t *tcpLimits) release(c *trackedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[c.key] != c {
		return
	}
	delete(t.conns, c.key)
	t.total--
	ip := clientNet(c.key.remote.Addr())
	if n := t.perAddr[ip]; n <= 1 {
		delete(t.perAddr, ip)
	} else {
		t.perAddr[ip] = n - 1
	}
}

// tcpAllocated tells the TCP connection whose remote address is remote (and local address local) that it has an
// allocation now, or no longer: a connection without one is closed after Config.TCPIdleTimeout.
func (s *Server) tcpAllocated(remote, local netip.AddrPort, allocated bool) {
	s.tcpLimits.mu.Lock()
	c := s.tcpLimits.conns[connKey{remote: remote, local: local}]
	s.tcpLimits.mu.Unlock()
	if c == nil {
		return
	}
	if allocated {
		_ = c.SetDeadline(time.Time{})
	} else {
		_ = c.SetDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
	}
}

// trackedListener wraps a TCP listener for pion. It caps the connections (in all and per client address), gives
// each a deadline until it has an allocation, checks the framing of what each sends, remembers them so that Close
// can end the ones pion would leave open, and keeps accepting through errors such as running out of descriptors,
// where pion's accept loop would stop for good.
type trackedListener struct {
	net.Listener
	s     *Server
	tls   *tls.Config // TURN over TLS on this listener's connections; nil: none (TCP, or TLS already set up)
	loops []*dataLoop // serve the plain TCP connections of this listener (tcploop_linux.go); nil: goroutines do
	next  int         // the loop of the next connection
	done  chan struct{}

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

// newTrackedListener wraps l; with tlsCfg, its connections are served TLS (the handshake happens on the first
// read, in the connection's goroutine, within the idle timeout).
func (s *Server) newTrackedListener(l net.Listener, tlsCfg *tls.Config) *trackedListener {
	return &trackedListener{Listener: l, s: s, tls: tlsCfg, done: make(chan struct{}), conns: make(map[*trackedConn]struct{})}
}

func (l *trackedListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			// Out of descriptors or memory, or a connection reset before it was accepted: wait a little, as
			// net/http does, and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.s.cfg.Logger.Warn("TURN TCP accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-l.done:
				return nil, fmt.Errorf("turnserver: %w", net.ErrClosed)
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		tc := &trackedConn{
			Conn: c,
			l:    l,
			key:  connKey{remote: addrPortOf(c.RemoteAddr()), local: addrPortOf(c.LocalAddr())},
		}
		if limit := l.s.tcpLimits.admit(tc); limit != "" {
			l.s.limited(limit, c.RemoteAddr(), "")
			if tcp, ok := c.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0) // a reset: the client knows at once, and no TIME_WAIT is left here
			}
			_ = c.Close()
			continue
		}
		l.s.metrics.tcpConns.Inc()
		_ = c.SetDeadline(time.Now().Add(l.s.cfg.TCPIdleTimeout))
		if l.tls != nil {
			tc.Conn = tls.Server(c, l.tls)
		} else if tcp, ok := c.(*net.TCPConn); ok && l.loops != nil {
			l.next++
			if err := tc.attachLoop(tcp, l.loops[l.next%len(l.loops)], time.Now().Add(l.s.cfg.TCPIdleTimeout)); err != nil {
				l.s.cfg.Logger.Warn("TURN TCP connection served by goroutines", "err", err)
			}
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = tc.Close()
			return nil, fmt.Errorf("turnserver: %w", net.ErrClosed)
		}
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

// closeConns closes the listener's connections and makes it accept no more.
func (l *trackedListener) closeConns() {
	l.mu.Lock()
	if !l.closed {
		close(l.done)
	}
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

func (l *trackedListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	l.mu.Unlock()
	return err
}

// trackedConn is a TCP connection as pion sees it. Its Read reads the stream into a buffer of its own, checks
// that it is a sequence of STUN messages and ChannelData frames (RFC 8656, section 11.5) of a size the server
// handles, and fails on anything else, which ends pion's read loop and closes the connection. It relays the
// ChannelData frames of a channel tandem knows itself (channels.go), and returns the other frames to pion one
// whole frame per Read. On Linux a plain TCP connection is read and written by a loop instead (tcploop_linux.go),
// the same way, and its Read returns the frames the loop hands it.
type trackedConn struct {
	net.Conn
	l   *trackedListener
	key connKey

	closeOnce sync.Once
	relay     atomic.Pointer[relayConn] // the connection's allocation, once it has one
	lc        *tcpLoopConn              // a plain TCP connection served by a loop (tcploop_linux.go); nil: Conn is read and written itself

	// The read buffer, touched only by the reading goroutine: buf[off:end] has not been handed on yet.
	buf      []byte
	off, end int
	err      error // the error that ended the last read, returned once the buffer is drained
}

// tcpReadBuffer is the size of a TCP connection's read buffer: a few frames, so that a read often brings several.
const tcpReadBuffer = 4096

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.lc != nil {
		return c.lc.read(p)
	}
	if c.buf == nil {
		c.buf = make([]byte, tcpReadBuffer)
	}
	for {
		size, ferr := frameSize(c.buf[c.off:c.end])
		if ferr != nil {
			c.l.s.limited(limitTCPGarbage, c.RemoteAddr(), "")
			return 0, ferr
		}
		if size > 0 {
			frame := c.buf[c.off : c.off+size]
			c.off += size
			if isChannelData(frame) {
				if rc := c.relay.Load(); rc != nil && rc.fromClient(frame) {
					continue
				}
			}
			if len(p) < size {
				return 0, fmt.Errorf("turnserver: a %d-byte read buffer for a %d-byte frame: %w", len(p), size, io.ErrShortBuffer)
			}
			return copy(p, frame), nil
		}
		if c.err != nil {
			return 0, c.err
		}
		if c.off > 0 {
			c.end = copy(c.buf, c.buf[c.off:c.end])
			c.off = 0
		}
		n, err := c.Conn.Read(c.buf[c.end:])
		c.end += n
		if err != nil {
			var ne net.Error // escapes (errors.As): declared only where a read failed
			if errors.As(err, &ne) && ne.Timeout() {
				c.l.s.limited(limitTCPIdle, c.RemoteAddr(), "")
			}
		}
		c.err = err
	}
}

// frameSize returns the size of the frame at the start of b: 0 if b does not hold all of it yet, an error if
// b does not start like a STUN message or a ChannelData frame the server handles.
func frameSize(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var size int
	switch first := b[0]; {
	case first < 0x40: // STUN: the first two bits are zero; a 20-byte header and a body of a multiple of 4 bytes
		if len(b) < 8 {
			return 0, nil
		}
		length := int(binary.BigEndian.Uint16(b[2:4]))
		if binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie || length%4 != 0 {
			return 0, errTCPGarbage
		}
		size = stunHeaderSize + length
	case first < 0x80: // ChannelData, a channel number 0x4000 to 0x7FFF, padded to a multiple of 4 bytes over TCP
		if len(b) < channelHeader {
			return 0, nil
		}
		size = channelHeader + (int(binary.BigEndian.Uint16(b[2:4]))+3)&^3
	default:
		return 0, errTCPGarbage
	}
	if size > maxTCPFrame {
		return 0, errTCPOversize
	}
	if size > len(b) {
		return 0, nil
	}
	return size, nil
}

// SetDeadline sets the deadline of reads (and, on a connection the loops do not serve, of writes).
func (c *trackedConn) SetDeadline(t time.Time) error {
	if c.lc != nil {
		c.lc.setDeadline(t)
		return nil
	}
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the deadline of reads.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if c.lc != nil {
		c.lc.setDeadline(t)
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of writes, on a connection the loops do not serve (pion's writes to one they
// serve wait only while its backlog is full).
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	if c.lc != nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// Write is pion's write of a message to the client.
func (c *trackedConn) Write(p []byte) (int, error) {
	if c.lc != nil {
		return c.lc.write(p)
	}
	return c.Conn.Write(p)
}

func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() {
		if c.lc != nil {
			c.lc.close() // before the descriptor is closed: no loop writes to it (or to one reusing its number) after
		}
		c.l.s.tcpLimits.release(c)
		c.l.s.metrics.tcpConns.Dec()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
