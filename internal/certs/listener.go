package certs

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// sniffTimeout is how long a new connection may take to send its first byte.
const sniffTimeout = 10 * time.Second

// tlsRecordHandshake is the first byte of a TLS connection: a handshake record.
const tlsRecordHandshake = 0x16

// NewListener returns a listener that serves TLS with cfg on l, and lets plain HTTP through on the same port: a
// connection whose first byte starts a TLS handshake is returned as a *tls.Conn, any other as it is. Serve it
// with http.Server.Serve (not ServeTLS) and wrap the handler in RedirectPlain, so that someone who types
// http://host:port/ is sent to https://host:port/ rather than shown an error.
//
// The listener starts its goroutines on the first Accept; Close stops them and closes the connections that have
// not sent their first byte yet.
func NewListener(l net.Listener, cfg *tls.Config) net.Listener {
	return &sniffListener{
		Listener: l,
		cfg:      cfg,
		conns:    make(chan net.Conn),
		errs:     make(chan error),
		done:     make(chan struct{}),
		pending:  make(map[net.Conn]struct{}),
	}
}

type sniffListener struct {
	net.Listener
	cfg   *tls.Config
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
		l.wg.Add(1)
		go l.acceptLoop()
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
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.pending[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.sniff(c)
	}
}

// sniff waits for the first byte of c and hands c to Accept, as TLS or as plain.
func (l *sniffListener) sniff(c net.Conn) {
	defer l.wg.Done()
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	first, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		_ = c.Close()
		return
	}
	var out net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == tlsRecordHandshake {
		out = tls.Server(out, l.cfg)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		_ = c.Close()
	}
}

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

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

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
