package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// startOps serves an operator's endpoints on a listener of their own at addr (-metrics-addr): /metrics,
// /healthz and /readyz from ops, and Go's profiler under /debug/pprof/ (but its cmdline, which would show
// secrets given as flags). It returns the address it listens on and a function that stops it; it is stopped
// after the server, so that /readyz says "shutting down" while the server drains.
func startOps(addr string, ops http.Handler, logger *slog.Logger) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", ops)
	addPprof(mux)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	return ln.Addr(), func() { _ = hs.Close(); <-done }, nil
}
