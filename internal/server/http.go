package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP bounds, the defaults of Config (docs/limits.md).
const (
	// DefaultRequestTimeout bounds how long a client may take to send a whole request, headers and body. It is
	// also the epoll loops' bound on a WebSocket handshake.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultResponseTimeout bounds how long a response may take to be written to a client that reads slowly.
	DefaultResponseTimeout = 30 * time.Second
	// DefaultMaxHTTPConns bounds the connections net/http serves at once.
	DefaultMaxHTTPConns = 1024
	// idleTimeout closes a keep-alive connection with no request for this long.
	idleTimeout = 120 * time.Second
	// maxHeaderBytes is the largest request header block, as the epoll loops' (internal/ws).
	maxHeaderBytes = 64 << 10
)

// HTTPServer is net/http's server with tandem's bounds: a request must arrive whole within RequestTimeout, its
// response be written within ResponseTimeout, and at most MaxHTTPConns connections are served at once (idle
// keep-alive connections are closed to make room; beyond that a new connection is answered 503).
type HTTPServer struct {
	hs   *http.Server
	gate *connGate
}

// NewHTTPServer returns an HTTPServer for handler with the HTTP bounds of s's Config and s's logger; the
// -http-redirect listener uses it too.
func (s *Server) NewHTTPServer(handler http.Handler) *HTTPServer {
	return newHTTPServer(handler, s.cfg, s.log, nil)
}

func newHTTPServer(handler http.Handler, cfg Config, logger *slog.Logger, base func(net.Listener) context.Context) *HTTPServer {
	gate := &connGate{max: cfg.MaxHTTPConns, conns: make(map[net.Conn]bool)}
	hs := &http.Server{
		Handler: handler,
		// ReadTimeout covers the body as well as the headers: a request that declares a body and never sends it
		// is dropped. After a WebSocket upgrade the connection is no longer net/http's, and ws clears it.
		ReadHeaderTimeout: cfg.RequestTimeout,
		ReadTimeout:       cfg.RequestTimeout,
		WriteTimeout:      cfg.ResponseTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         gate.track,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		BaseContext:       base,
	}
	return &HTTPServer{hs: hs, gate: gate}
}

// Serve serves ln until Shutdown; it returns http.ErrServerClosed then.
func (h *HTTPServer) Serve(ln net.Listener) error {
	h.gate.Listener = ln
	return h.hs.Serve(h.gate)
}

// Shutdown stops accepting and waits for the requests in flight (see http.Server.Shutdown).
func (h *HTTPServer) Shutdown(ctx context.Context) error { return h.hs.Shutdown(ctx) }

// Conns returns how many connections net/http serves.
func (h *HTTPServer) Conns() int {
	h.gate.mu.Lock()
	defer h.gate.mu.Unlock()
	return len(h.gate.conns)
}

// Refused returns how many connections were answered 503 because MaxHTTPConns were busy.
func (h *HTTPServer) Refused() uint64 { return h.gate.refused.Load() }

// connGate is the listener net/http accepts from: it keeps the number of connections net/http holds (from
// Accept until closed or hijacked) at most max.
type connGate struct {
	net.Listener
	max     int
	refused atomic.Uint64

	mu    sync.Mutex
	conns map[net.Conn]bool // the connections net/http holds; true while idle between requests
	idle  int
}

func (g *connGate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ok, evicted := g.admit(c)
		if evicted != nil {
			closeNow(evicted)
		}
		if ok {
			return c, nil
		}
		g.refused.Add(1)
		refuse(c)
	}
}

// admit counts c in if there is room, making room by taking an idle connection out (returned, for the caller to
// close) if need be.
func (g *connGate) admit(c net.Conn) (ok bool, evicted net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.conns) >= g.max {
		if g.idle == 0 {
			return false, nil
		}
		for ic, idle := range g.conns {
			if idle {
				evicted = ic
				break
			}
		}
		delete(g.conns, evicted)
		g.idle--
	}
	g.conns[c] = false
	return true, evicted
}

// track is the http.Server's ConnState hook.
func (g *connGate) track(c net.Conn, state http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	idle, ok := g.conns[c]
	if !ok {
		return // taken out to make room
	}
	switch state {
	case http.StateIdle:
		if !idle {
			g.conns[c] = true
			g.idle++
		}
	case http.StateActive:
		if idle {
			g.conns[c] = false
			g.idle--
		}
	case http.StateClosed, http.StateHijacked:
		delete(g.conns, c)
		if idle {
			g.idle--
		}
	}
}

// closeNow closes c at once: a TLS connection's socket is closed under it, with no close_notify that a client
// which does not read could hold up.
func closeNow(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Close()
}

// busyResponse is what a connection over MaxHTTPConns is told before it is closed.
var busyResponse = fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(busyText), busyText)

const busyText = "tandem is serving too many HTTP connections; try again in a moment\n"

// refuse answers c 503 (best effort: a connection that does not take it at once is closed all the same).
func refuse(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = io.WriteString(c, busyResponse)
	closeNow(c)
}
