package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The server's state, for readiness.
const (
	stateNew      = iota // Serve has not started
	stateServing         // Serve is serving
	stateStopping        // Serve is shutting down, or has returned
)

// readiness is what /readyz answers from.
type readiness struct {
	state  atomic.Int32
	mu     sync.Mutex
	checks []readinessCheck
}

type readinessCheck struct {
	name  string
	check func() error
}

// AddReadinessCheck adds a condition of readiness: while check returns an error, /readyz answers 503 with name
// and the error. check is called on every request to /readyz, so it must be quick.
func (s *Server) AddReadinessCheck(name string, check func() error) {
	s.ready.mu.Lock()
	defer s.ready.mu.Unlock()
	s.ready.checks = append(s.ready.checks, readinessCheck{name, check})
}

// notReady says why the server should be sent no new users now, or "" when it may.
func (s *Server) notReady() string {
	switch s.ready.state.Load() {
	case stateNew:
		return "not serving yet"
	case stateStopping:
		if s.draining.Load() {
			return "draining (shutting down)"
		}
		return "shutting down"
	}
	if err := s.hub.Ready(); err != nil { // a cluster node that cannot take new users (Redis, its lease)
		return err.Error()
	}
	s.ready.mu.Lock()
	checks := s.ready.checks
	s.ready.mu.Unlock()
	var why []string
	for _, c := range checks {
		if err := c.check(); err != nil {
			why = append(why, c.name+": "+err.Error())
		}
	}
	return strings.Join(why, "; ")
}

// serveHealth answers /healthz: tandem's process is alive (liveness).
func serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// serveReady answers /readyz: 200 "ready" while the server serves and every readiness check passes, else 503
// with the reasons (readiness: whether to send it new users).
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if why := s.notReady(); why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+why)
		return
	}
	fmt.Fprintln(w, "ready")
}

// OpsHandler serves what an operator's tools ask for, for a listener of their own (tandem's -metrics-addr):
// /metrics, /healthz and /readyz. It stays useful while the server shuts down: /readyz then answers 503.
func (s *Server) OpsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("GET /healthz", serveHealth)
	mux.HandleFunc("GET /readyz", s.serveReady)
	return mux
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
}
