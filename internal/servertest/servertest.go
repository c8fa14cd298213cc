// Package servertest runs a real tandem server on a loopback port for the tests of other packages: the same
// server.Server that cmd/tandem runs, on 127.0.0.1, stopped gracefully when the test ends.
package servertest

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"

	"tandem/client"
	"tandem/internal/server"
)

// Server is a running test server.
type Server struct {
	*server.Server
	Addr string // host:port it listens on
	URL  string // its WebSocket URL, ws://127.0.0.1:port/

	once    sync.Once
	cancel  context.CancelFunc
	done    chan error
	stopErr error
}

// Start runs a server with tandem's default configuration, changed by change if it is not nil, on a free port of
// 127.0.0.1 until the test ends.
func Start(t testing.TB, change func(*server.Config)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return StartOn(t, ln, change, nil)
}

// StartOn runs a server on ln (for a test that restarts a server on the same address) until the test ends.
// logger may be nil for no logs.
func StartOn(t testing.TB, ln net.Listener, change func(*server.Config), logger *slog.Logger) *Server {
	t.Helper()
	cfg := server.DefaultConfig()
	if change != nil {
		change(&cfg)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv, err := server.New(cfg, logger)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	return Serve(t, srv, ln)
}

// Serve serves srv, built by the test (to wire TURN into it, say), on ln until the test ends. With ln nil it
// listens on a free port of 127.0.0.1.
func Serve(t testing.TB, srv *server.Server, ln net.Listener) *Server {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Server: srv, Addr: ln.Addr().String(), URL: "ws://" + ln.Addr().String() + "/", cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// HTTP returns the server's base URL for plain HTTP requests, http://127.0.0.1:port.
func (s *Server) HTTP() string { return "http://" + s.Addr }

// Stop shuts the server down gracefully and returns what Serve returned. It may be called more than once.
func (s *Server) Stop() error {
	s.once.Do(func() {
		s.cancel()
		s.stopErr = <-s.done
	})
	return s.stopErr
}

// Login connects a client to url with opts, logs it in as name and closes it when the test ends; any failure
// fails the test.
func Login(t testing.TB, ctx context.Context, url, name string, opts *client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if _, err := c.Login(ctx, name, ""); err != nil {
		t.Fatal(err)
	}
	return c
}
