// Package redistest starts a private redis-server for a test: found on PATH, listening only on a Unix socket in
// the test's temporary directory, without persistence, stopped (by the process id it started) when the test
// ends. Without redis-server the test is skipped with an install hint, or fails when TANDEM_REQUIRE_REDIS=1 (as
// in CI). It never talks to a Redis it did not start.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireEnv makes a missing redis-server a failure instead of a skip.
const RequireEnv = "TANDEM_REQUIRE_REDIS"

// Server is one redis-server process of a test.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	sock string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited (and been waited for)
}

// syncWriter collects the server's output.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// ping reports whether the server answers PING on its socket.
func (s *Server) ping() bool {
	c, err := net.DialTimeout("unix", s.sock, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Start starts a redis-server for t.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redis-server is not on PATH and %s=1: install it (apt-get install redis-server)", RequireEnv)
		}
		t.Skipf("redis-server is not on PATH: install it (apt-get install redis-server) to run the cluster tests (%s=1 makes this a failure)", RequireEnv)
	}
	dir := t.TempDir()
	if len(dir) > 80 { // a socket's path is limited to about 100 bytes: a shorter temporary directory
		if dir, err = os.MkdirTemp("", "redis"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	s := &Server{t: t, bin: bin, dir: dir, sock: filepath.Join(dir, "redis.sock")}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's address for a Redis client (and tandem's -redis).
func (s *Server) URL() string { return "unix://" + s.sock }

// Socket is the path of the server's Unix socket.
func (s *Server) Socket() string { return s.sock }

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, "--port", "0", "--unixsocket", s.sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--maxmemory-policy", "noeviction")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &syncWriter{b: &log}, nil
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for !s.ping() {
		select {
		case <-exited:
			s.t.Fatalf("redis-server exited: %s", cmd.Stdout.(*syncWriter).String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			s.t.Fatalf("redis-server did not answer within 10 s: %s", cmd.Stdout.(*syncWriter).String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.exited = exited
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
}

// Stop stops the server (SIGTERM, then SIGKILL) and waits for it; it is safe to call twice.
func (s *Server) Stop() { s.stop(false) }

// Kill kills the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() { s.stop(true) }

func (s *Server) stop(kill bool) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if kill {
		_ = cmd.Process.Kill()
	} else {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
			}
		}()
		defer close(done)
	}
	<-exited
	_ = os.Remove(s.sock)
}

// Restart starts the server again, empty (there is no persistence), on the same socket.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Start again after Stop or Kill, empty.
func (s *Server) StartAgain() {
	s.t.Helper()
	s.start()
}

// Do runs one command (inline syntax: no spaces within an argument) and returns its reply's first line.
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	c, err := net.DialTimeout("unix", s.sock, 5*time.Second)
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		s.t.Fatalf("redis %v: %v", args, err)
	}
	return strings.TrimRight(line, "\r\n")
}
