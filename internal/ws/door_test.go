//go:build linux

package ws

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"tandem/internal/rfc6455"
)

// dialTCP connects to the harness's server without saying anything.
func dialTCP(t *testing.T, h *harness) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// TestDoorRequestInPieces: a handshake that arrives a few bytes at a time, with a message right behind its last
// piece, is answered once whole, and the message is delivered.
func TestDoorRequestInPieces(t *testing.T) {
	h := startDoor(t, Config{}, true, true)
	nc := dialTCP(t, h)
	req := []byte(handshakeRequest)
	for len(req) > 0 {
		n := min(7, len(req))
		if _, err := nc.Write(req[:n]); err != nil {
			t.Fatal(err)
		}
		req = req[n:]
	}
	if _, err := nc.Write(frame(true, rfc6455.OpText, []byte("hello"), true)); err != nil {
		t.Fatal(err)
	}
	c := expectUpgrade(t, nc, bufio.NewReader(nc))
	e := h.next(t)
	if ev := e.wait(t); ev != "text:hello" {
		t.Fatalf("got %q", ev)
	}
	c.expectText("hello")
	if n := h.srv.Len(); n != 1 {
		t.Fatalf("Len %d, want 1", n)
	}
}

// TestDoorHandsOverToHTTP: requests the loop does not take (another path, a long header, a keep-alive
// connection that upgrades after a plain request) reach net/http with every byte, and still work.
func TestDoorHandsOverToHTTP(t *testing.T) {
	h := startDoor(t, Config{}, true, true)

	t.Run("plain request, then an upgrade on the same connection", func(t *testing.T) {
		nc := dialTCP(t, h)
		br := bufio.NewReader(nc)
		if _, err := io.WriteString(nc, "GET /http HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "served by net/http" {
			t.Fatalf("%s %q", resp.Status, body)
		}
		if _, err := io.WriteString(nc, handshakeRequest); err != nil {
			t.Fatal(err)
		}
		c := expectUpgrade(t, nc, br)
		c.send(frame(true, rfc6455.OpText, []byte("after http"), true))
		c.expectText("after http")
		if ev := h.next(t).wait(t); ev != "text:after http" {
			t.Fatalf("got %q", ev)
		}
	})

	t.Run("handshake longer than the loop reads", func(t *testing.T) {
		nc := dialTCP(t, h)
		req := strings.Replace(handshakeRequest, "Host: x\r\n", "Host: x\r\nX-Padding: "+strings.Repeat("p", maxRequest)+"\r\n", 1)
		if _, err := io.WriteString(nc, req); err != nil {
			t.Fatal(err)
		}
		c := expectUpgrade(t, nc, bufio.NewReader(nc))
		c.send(frame(true, rfc6455.OpText, []byte("long"), true))
		c.expectText("long")
		if ev := h.next(t).wait(t); ev != "text:long" {
			t.Fatalf("got %q", ev)
		}
	})
}

// TestDoorHandshakeTimeout: a connection that never finishes its request is dropped after HandshakeTimeout,
// and is never counted as a WebSocket connection.
func TestDoorHandshakeTimeout(t *testing.T) {
	h := startDoor(t, Config{HandshakeTimeout: 200 * time.Millisecond}, false, true)
	nc := dialTCP(t, h)
	if _, err := io.WriteString(nc, handshakeRequest[:30]); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := nc.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v: the connection should have been dropped", n, err)
	}
	if n := h.srv.Len(); n != 0 {
		t.Fatalf("Len %d, want 0", n)
	}
}

// TestDoorShutdown: Shutdown closes the listener, upgraded connections with the code given, and connections
// whose request is still coming.
func TestDoorShutdown(t *testing.T) {
	srv := newServer(t, Config{}) // shut down by the test
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	evs := make(chan *events, 4)
	wsln, err := srv.Listen(ln, func(*Request) func(*Conn) Handler {
		return func(c *Conn) Handler {
			e := &events{c: c, ch: make(chan string, 16)}
			evs <- e
			return e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := wsln.Accept()
		accepted <- err
	}()
	h := &harness{srv: srv, url: "http://" + wsln.Addr().String()}
	open := dialRaw(t, h.url, nil)
	e := <-evs
	half := dialTCP(t, h)
	if _, err := io.WriteString(half, handshakeRequest[:30]); err != nil {
		t.Fatal(err)
	}

	shutDown(t, srv, open, e)
	_ = half.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := half.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half-open connection: read %d, %v; want it closed", n, err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after shutdown: %v, want net.ErrClosed", err)
	}
	if _, err := net.Dial("tcp", wsln.Addr().String()); err == nil {
		t.Fatal("the listener still accepts after shutdown")
	}
}

// TestDoorHandOffKeepsHandshakeTimeout: a request whose header grows past what the loop reads just before the
// loop's handshake timeout is handed to net/http, and must still be done by that timeout, counted from when the
// connection was accepted: net/http's own header timeout (10 s here, as tandem's) does not start again. The
// client dribbles its header and never ends it.
func TestDoorHandOffKeepsHandshakeTimeout(t *testing.T) {
	const timeout = 600 * time.Millisecond
	srv := newServer(t, Config{HandshakeTimeout: timeout})
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a request with no end reached the handler")
	}))
	hs.Config.ReadHeaderTimeout = 10 * time.Second
	ln, err := srv.Listen(hs.Listener, func(*Request) func(*Conn) Handler { return nil })
	if err != nil {
		t.Fatal(err)
	}
	hs.Listener = ln
	hs.Start()
	t.Cleanup(func() {
		hs.Close()
		if err := srv.Shutdown(context.Background(), CloseGoingAway, ""); err != nil {
			t.Error(err)
		}
	})

	start := time.Now()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// A few bytes at a time for two thirds of the timeout, then more than the loop reads, then a byte every
		// 20 ms for as long as the connection takes them.
		header := "GET / HTTP/1.1\r\nHost: x\r\n"
		for i := 0; time.Since(start) < timeout*2/3; i++ {
			if _, err := io.WriteString(nc, header[i%len(header):i%len(header)+1]); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := io.WriteString(nc, "X-Padding: "+strings.Repeat("p", maxRequest+1)); err != nil {
			return
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := io.WriteString(nc, "p"); err != nil {
					return
				}
			}
		}
	}()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(nc)
	took := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the unfinished request was still held after %v (handshake timeout %v)", took, timeout)
	}
	if took > timeout+400*time.Millisecond {
		t.Fatalf("the unfinished request was dropped after %v, handshake timeout %v", took, timeout)
	}
	if len(answer) != 0 && !bytes.HasPrefix(answer, []byte("HTTP/1.1 4")) {
		t.Fatalf("answered %q to a request that never ended", answer)
	}
}
