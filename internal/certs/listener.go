package certs

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// tlsRecordHandshake is the first byte of a TLS connection: a handshake record.
const tlsRecordHandshake = 0x16

// ListenerConfig bounds what NewListener's listener holds. Zero values mean the defaults.
type ListenerConfig struct {
	// FirstRequest bounds the time from a connection's start to the first response written to it: its first
	// byte, its TLS handshake and its whole first request (headers and body) must arrive within it, or the
	// connection is closed. Later requests on the connection are the HTTP server's to bound. Default 10 s.
	FirstRequest time.Duration
	// MaxPending bounds the connections still sending their first byte or their TLS handshake; a connection
	// beyond it is closed at once. Default 1024.
	MaxPending int
	// Logger gets failed TLS handshakes, at debug level. Nil: none are logged.
	Logger *slog.Logger
	// TURN, if not nil, shares the port with TURN over TLS (RFC 7065), so that one port (443) serves the web
	// client and the TURN relay: a TLS connection whose client asked for TURN's ALPN protocol ("stun.turn", added
	// to the configuration's), or asked for none and sent a STUN message first, is given to TURN (its TLS
	// handshake done, its first bytes still to read), which owns it from then on. Nil: every connection is HTTP.
	TURN func(net.Conn)
}

// alpnTURN is TURN's ALPN protocol id (RFC 7443).
const alpnTURN = "stun.turn"

// NewListener returns a listener that serves TLS with cfg on l, and lets plain HTTP through on the same port: a
// connection whose first byte starts a TLS handshake is returned as a *tls.Conn, its handshake done, any other as
// it is. Serve it with http.Server.Serve (not ServeTLS) and wrap the handler in RedirectPlain, so that someone who
// types http://host:port/ is sent to https://host:port/ rather than shown an error.
//
// The listener starts its goroutines on the first Accept; Close stops them and closes the connections that have
// not finished their TLS handshake yet.
func NewListener(l net.Listener, cfg *tls.Config, lc ListenerConfig) net.Listener {
	if lc.FirstRequest <= 0 {
		lc.FirstRequest = 10 * time.Second
	}
	if lc.MaxPending <= 0 {
		lc.MaxPending = 1024
	}
	if lc.TURN != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = append(slices.Clip(cfg.NextProtos), alpnTURN)
	}
	return &sniffListener{
		Listener: l,
		cfg:      cfg,
		lc:       lc,
		conns:    make(chan net.Conn),
		errs:     make(chan error),
		done:     make(chan struct{}),
		pending:  make(map[net.Conn]struct{}),
	}
}

type sniffListener struct {
	net.Listener
	cfg   *tls.Config
	lc    ListenerConfig
	conns chan net.Conn
	errs  chan error
	done  chan struct{}

	startOnce sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{}
	closed  bool
}

func (l *sniffListener) Accept() (net.Conn, error) {
	l.startOnce.Do(func() {
		// Under mu, as Close sets closed: a Close that has begun makes this Accept start nothing, and one that
		// comes after waits for what this one started (never an Add while Close waits).
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.closed {
			l.wg.Add(1)
			go l.acceptLoop()
		}
	})
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		start := time.Now()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		if len(l.pending) >= l.lc.MaxPending {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.pending[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.sniff(c, start.Add(l.lc.FirstRequest))
	}
}

// sniff waits for the first byte of c and hands c to Accept, as TLS (once its handshake is done) or as plain,
// or to TURN. Until the first response is written, c's read deadline stays at or before firstBy, whatever the
// HTTP server (or TURN) sets.
func (l *sniffListener) sniff(c net.Conn, firstBy time.Time) {
	defer l.wg.Done()
	pc := &peekedConn{Conn: c, r: bufio.NewReader(c), firstBy: firstBy}
	pc.state.Store(firstClamped)
	_ = c.SetDeadline(firstBy)
	var out net.Conn = pc
	toTURN := false
	first, err := pc.r.Peek(1)
	if err == nil && first[0] == tlsRecordHandshake {
		tc := tls.Server(pc, l.cfg)
		if err = tc.Handshake(); err != nil && l.lc.Logger != nil {
			l.lc.Logger.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		}
		out = tc
		if err == nil && l.lc.TURN != nil {
			out, toTURN, err = l.whichProtocol(tc)
		}
	}
	_ = c.SetWriteDeadline(time.Time{})
	pc.state.Store(firstArmed)
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		_ = c.Close()
		return
	}
	if toTURN {
		l.lc.TURN(out)
		return
	}
	select {
	case l.conns <- out:
	case <-l.done:
		_ = c.Close()
	}
}

// whichProtocol tells TURN from HTTP on a TLS connection: by the ALPN protocol the client asked for, and when it
// asked for none (browsers always ask for http/1.1 or h2; TURN clients, browsers' included, usually for none), by
// the first bytes it sends: a STUN message (RFC 8489) starts with two zero bits and has the magic cookie at bytes
// 4 to 8, an HTTP request starts with a method's capital letters. The connection it returns reads those bytes
// again; as HTTP it reports its TLS state, so that net/http fills in Request.TLS.
func (l *sniffListener) whichProtocol(tc *tls.Conn) (net.Conn, bool, error) {
	switch tc.ConnectionState().NegotiatedProtocol {
	case alpnTURN:
		return tc, true, nil
	case "":
	default:
		return tc, false, nil
	}
	// A small buffer: once it is drained, reads larger than it go straight to the TLS connection.
	r := bufio.NewReaderSize(tc, 16)
	out := &tlsPeekedConn{Conn: tc, r: r}
	first, err := r.Peek(1)
	if err != nil {
		return nil, false, err
	}
	if first[0]&0xC0 != 0 {
		return out, false, nil
	}
	head, err := r.Peek(8)
	if err != nil {
		return nil, false, err
	}
	return out, binary.BigEndian.Uint32(head[4:8]) == stunMagicCookie, nil
}

// stunMagicCookie is the fixed second word of every STUN message (RFC 8489).
const stunMagicCookie = 0x2112A442

// tlsPeekedConn is a TLS connection whose first bytes were read into r.
type tlsPeekedConn struct {
	*tls.Conn
	r *bufio.Reader
}

func (c *tlsPeekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Close stops accepting, closes the connections still being sniffed and waits for the goroutines to end.
func (l *sniffListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// peekedConn is a connection whose first bytes were read into r. Until the first response is written to it, its
// read deadline is never later than firstBy.
type peekedConn struct {
	net.Conn
	r       *bufio.Reader
	firstBy time.Time
	state   atomic.Int32 // firstClamped, firstArmed or firstDone
}

// The states of a peekedConn's first request.
const (
	firstClamped int32 = iota // read deadlines are kept at or before firstBy
	firstArmed                // the same; the next write is the first response and lifts the bound
	firstDone                 // deadlines are the HTTP server's
)

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *peekedConn) Write(p []byte) (int, error) {
	if c.state.Load() == firstArmed {
		c.state.Store(firstDone)
	}
	return c.Conn.Write(p)
}

func (c *peekedConn) clamp(t time.Time) time.Time {
	if c.state.Load() != firstDone && (t.IsZero() || t.After(c.firstBy)) {
		return c.firstBy
	}
	return t
}

func (c *peekedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

func (c *peekedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// RedirectPlain passes requests that came over TLS to next, and redirects the others to the same URL over https
// on the same port.
func RedirectPlain(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			next.ServeHTTP(w, r)
			return
		}
		host := r.Host
		if host == "" || !validRedirectHost(host) {
			http.Error(w, "this server speaks https only", http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
}

// ServePlain passes requests that came over TLS to next, and the others to plain: with a self-signed certificate,
// a page that explains the browser's warning (package firstrun) rather than RedirectPlain's redirect into it.
func ServePlain(next, plain http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			next.ServeHTTP(w, r)
			return
		}
		plain.ServeHTTP(w, r)
	})
}
