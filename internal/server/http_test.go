package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/certs"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

// requestTimeout is tandem's documented bound on an unfinished request; slack is what a test allows above it
// for scheduling.
const (
	requestTimeout = 10 * time.Second
	slack          = 2 * time.Second
)

// tlsServer is a tandem server serving HTTPS with a self-signed certificate for localhost and 127.0.0.1.
type tlsServer struct {
	*servertest.Server
	roots *x509.CertPool
}

func startTLSServer(t *testing.T, change func(*server.Config)) *tlsServer {
	t.Helper()
	self, err := certs.LoadOrCreateSelfSigned(t.TempDir(), certs.Hosts{
		Names: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(self.Certificate.Leaf)
	s := servertest.Start(t, func(c *server.Config) {
		c.TLS = self.TLSConfig()
		if change != nil {
			change(c)
		}
	})
	return &tlsServer{Server: s, roots: roots}
}

// dialTLS opens a TLS connection to the server and completes the handshake.
func (s *tlsServer) dialTLS(t *testing.T) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, Deadline: time.Now().Add(5 * time.Second)}
	c, err := tls.DialWithDialer(d, "tcp", s.Addr, &tls.Config{RootCAs: s.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wsClient connects a protocol client over wss.
func (s *tlsServer) wsClient(t *testing.T, ctx context.Context) *client.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots}}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := client.Dial(ctx, "wss://"+s.Addr+"/", &client.Options{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reads (and throws away) whatever c is sent until the server closes it, and says so if c is still
// open at start+limit.
func waitClosed(c net.Conn, start time.Time, limit time.Duration) error {
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the connection is still open %v after it started", limit)
	}
	return nil
}

// TestUnfinishedRequestIsClosed sends requests that declare a body and never finish it, over plain HTTP and over
// TLS: each connection is closed within the documented 10 s, however the client spreads its bytes. The clients
// run at once, each on its own connection.
func TestUnfinishedRequestIsClosed(t *testing.T) {
	t.Parallel()
	plain := startServer(t, nil)
	secure := startTLSServer(t, nil)
	const head = "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
	neverSent := func(c net.Conn) error {
		start := time.Now()
		if _, err := io.WriteString(c, head); err != nil {
			return err
		}
		return waitClosed(c, start, requestTimeout+slack)
	}
	dripped := func(c net.Conn) error {
		start := time.Now()
		if _, err := io.WriteString(c, head); err != nil {
			return err
		}
		done, dripping := make(chan struct{}), make(chan struct{})
		go func() { // a byte every 300 ms: 100 bytes would take 30 s
			defer close(dripping)
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
			}
		}()
		err := waitClosed(c, start, requestTimeout+slack)
		close(done)
		<-dripping
		return err
	}
	// In TLS mode the 10 s count from the connection's start: a client slow to begin its handshake does not get
	// another 10 s for its request.
	slowStart := func(raw net.Conn) error {
		start := time.Now()
		time.Sleep(6 * time.Second) // the client waits before it says anything
		_ = raw.SetDeadline(start.Add(requestTimeout + slack))
		c := tls.Client(raw, &tls.Config{RootCAs: secure.roots, ServerName: "localhost"})
		if _, err := io.WriteString(c, head); err != nil {
			return err
		}
		return waitClosed(c, start, requestTimeout+slack)
	}
	cases := []struct {
		name string
		conn net.Conn
		run  func(net.Conn) error
	}{
		{"plain, body never sent", dialTCP(t, plain.Addr), neverSent},
		{"plain, body dripped", dialTCP(t, plain.Addr), dripped},
		{"TLS, body never sent", secure.dialTLS(t), neverSent},
		{"TLS, body dripped", secure.dialTLS(t), dripped},
		{"TLS, slow start", dialTCP(t, secure.Addr), slowStart},
	}
	errs := make(chan error, len(cases))
	for _, tc := range cases {
		go func() {
			if err := tc.run(tc.conn); err != nil {
				errs <- fmt.Errorf("%s: %w", tc.name, err)
				return
			}
			errs <- nil
		}()
	}
	for range cases {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestWebSocketOutlivesHTTPTimeouts keeps a WebSocket quiet past the HTTP request and response timeouts, in plain
// and in TLS mode (where net/http serves the upgrade), and then uses it.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	t.Parallel()
	shortResponse := func(c *server.Config) { c.ResponseTimeout = requestTimeout }
	plain := startServer(t, shortResponse)
	secure := startTLSServer(t, shortResponse)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout+15*time.Second)
	defer cancel()
	plainWS, err := client.Dial(ctx, plain.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plainWS.CloseNow()
	secureWS := secure.wsClient(t, ctx)
	start := time.Now()
	for _, c := range []*client.Client{plainWS, secureWS} {
		if r, err := c.Login(ctx, "alice", ""); err != nil || !r.Success {
			t.Fatalf("login: %+v %v", r, err)
		}
	}
	time.Sleep(time.Until(start.Add(requestTimeout + time.Second))) // a user who says nothing for a while
	for i, c := range []*client.Client{plainWS, secureWS} {
		if err := c.Send(ctx, []byte(`{"type":"nope"}`)); err != nil {
			t.Fatalf("connection %d after %v: %v", i, time.Since(start), err)
		}
		m, err := c.Read(ctx)
		if err != nil || m.Type != protocol.TypeError || m.Code != protocol.CodeUnknownType {
			t.Fatalf("connection %d after %v: %+v, %v", i, time.Since(start), m, err)
		}
	}
}

// TestHTTPConnectionLimit fills the server's HTTP connections with requests it is still waiting for: the next
// connection is answered 503 at once, idle keep-alive connections make room, and a freed slot is usable again.
func TestHTTPConnectionLimit(t *testing.T) {
	t.Parallel()
	const max = 4
	for _, tlsMode := range []bool{false, true} {
		name := "plain"
		if tlsMode {
			name = "TLS"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var addr string
			dial := func(t *testing.T) net.Conn { return dialTCP(t, addr) }
			limit := func(c *server.Config) { c.MaxHTTPConns = max }
			if tlsMode {
				s := startTLSServer(t, limit)
				addr = s.Addr
				dial = s.dialTLS
			} else {
				addr = startServer(t, limit).Addr
			}
			get := func(c net.Conn) (*http.Response, error) {
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
					return nil, err
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				return resp, err
			}
			// Idle keep-alive connections do not keep anyone out.
			for i := 0; i < max+2; i++ {
				if resp, err := get(dial(t)); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d with idle connections around: %v", i, err)
				}
			}
			// Requests still arriving do.
			var busy []net.Conn
			for len(busy) < max {
				c := dial(t)
				if _, err := io.WriteString(c, "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				busy = append(busy, c)
			}
			waitFor(t, func() bool {
				resp, err := get(dial(t))
				return err == nil && resp.StatusCode == http.StatusServiceUnavailable
			})
			_ = busy[0].Close()
			waitFor(t, func() bool {
				resp, err := get(dial(t))
				return err == nil && resp.StatusCode == http.StatusOK
			})
		})
	}
}

// TestResponseToClientThatDoesNotRead pipelines requests for the largest file of the web client and reads
// nothing for a while: the server gives up writing after its response timeout and closes the connection, so the
// client, when it reads at last, finds the end of the connection before the end of its responses.
func TestResponseToClientThatDoesNotRead(t *testing.T) {
	t.Parallel()
	const timeout = 5 * time.Second
	r := startServer(t, func(c *server.Config) { c.ResponseTimeout = timeout })
	body := len(r.get("/js/app.js"))
	http.DefaultClient.CloseIdleConnections()
	c := dialTCP(t, r.Addr)
	_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	const n = 200 // far more than the socket buffers hold: the server blocks writing long before the last one
	req := "GET /js/app.js HTTP/1.1\r\nHost: localhost\r\n\r\n"
	start := time.Now()
	_ = c.SetWriteDeadline(start.Add(timeout + slack))
	if _, err := io.WriteString(c, strings.Repeat(req, n)); err != nil {
		t.Fatal(err)
	}
	// Nothing tells a client that does not read that the server has given up on it: it reads once the server
	// must have.
	time.Sleep(time.Until(start.Add(timeout + slack)))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open %v after the requests (%d bytes read)", time.Since(start), got)
	}
	if got >= int64(n*body) {
		t.Fatalf("read %d bytes, all %d responses", got, n)
	}
}
