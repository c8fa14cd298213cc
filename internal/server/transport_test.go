package server_test

// Tests of the WebSocket transport (internal/ws) through the real server: what a stranger's malformed handshake,
// a connection reset in the middle of a burst, or too many connections do to tandem, seen from raw TCP clients.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/internal/rfc6455"
	"tandem/internal/server"
)

// rawConn is a WebSocket client written byte by byte on a TCP connection, for what no library sends.
type rawConn struct {
	t  *testing.T
	nc *net.TCPConn
	br *bufio.Reader
}

func rawHandshake(key string) string {
	return "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"
}

// dialTCP connects to the server without saying anything.
func (r *running) dialTCP() *net.TCPConn {
	r.t.Helper()
	nc, err := net.Dial("tcp", r.Addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { nc.Close() })
	return nc.(*net.TCPConn)
}

// rawDial opens a WebSocket connection and checks the server's 101.
func (r *running) rawDial() *rawConn {
	r.t.Helper()
	nc := r.dialTCP()
	if _, err := io.WriteString(nc, rawHandshake("dGhlIHNhbXBsZSBub25jZQ==")); err != nil {
		r.t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		r.t.Fatalf("handshake answered %s", resp.Status)
	}
	return &rawConn{t: r.t, nc: nc, br: br}
}

// maskedFrame is a whole client frame.
func maskedFrame(op byte, payload []byte) []byte {
	out := []byte{0x80 | op}
	switch l := len(payload); {
	case l < 126:
		out = append(out, 0x80|byte(l))
	case l < 1<<16:
		out = append(out, 0x80|126, byte(l>>8), byte(l))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(l))
	}
	const key = 0x1badcafe
	out = binary.LittleEndian.AppendUint32(out, key)
	start := len(out)
	out = append(out, payload...)
	rfc6455.Mask(out[start:], key)
	return out
}

func (c *rawConn) send(op byte, payload string) error {
	_, err := c.nc.Write(maskedFrame(op, []byte(payload)))
	return err
}

// read returns the next frame from the server.
func (c *rawConn) read() (op byte, payload []byte, err error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return h[0] & 0x0f, payload, err
}

// readText returns the next text message, skipping pings.
func (c *rawConn) readText() string {
	c.t.Helper()
	for {
		op, p, err := c.read()
		if err != nil {
			c.t.Fatalf("no message: %v", err)
		}
		if op == rfc6455.OpText {
			return string(p)
		}
	}
}

// expectClose reads until the server's close frame and returns its code and reason.
func (c *rawConn) expectClose() (int, string) {
	c.t.Helper()
	for {
		op, p, err := c.read()
		if err != nil {
			c.t.Fatalf("expected a close frame, got %v", err)
		}
		if op == rfc6455.OpClose {
			if len(p) < 2 {
				return 1005, ""
			}
			return int(binary.BigEndian.Uint16(p)), string(p[2:])
		}
	}
}

// login logs the raw connection in as name.
func (c *rawConn) login(name string) {
	c.t.Helper()
	if err := c.send(rfc6455.OpText, `{"type":"login","name":"`+name+`"}`); err != nil {
		c.t.Fatal(err)
	}
	if m := c.readText(); !strings.Contains(m, `"success":true`) {
		c.t.Fatalf("login: %s", m)
	}
}

// reset drops the connection with a TCP reset, as a client whose network vanished or which was killed does.
func (c *rawConn) reset() {
	_ = c.nc.SetLinger(0)
	_ = c.nc.Close()
}

// TestOddWebSocketKey: a handshake whose Sec-WebSocket-Key is valid base64 of more than 16 bytes is refused with
// 400, like any other bad key, and the server goes on serving everyone else. (It used to panic in the epoll loop
// that read it, which took the whole process down.)
func TestOddWebSocketKey(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	before := r.rawDial()
	before.login("before")
	for _, key := range []string{
		strings.Repeat("A", 28),           // 21 bytes
		strings.Repeat("A", 44),           // 33 bytes
		strings.Repeat("QUFB", 30),        // 90 bytes
		"dGhlIHNhbXBsZSBub25jZQ==" + "AA", // not base64 of anything (24 + 2 characters)
		"",
	} {
		nc := r.dialTCP()
		if _, err := io.WriteString(nc, rawHandshake(key)); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("key %q: no answer: %v", key, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Sec-WebSocket-Key") {
			t.Fatalf("key %q: %s %q, want 400 naming the key", key, resp.Status, body)
		}
	}
	// The connection from before, and new ones, carry on.
	after := r.rawDial()
	after.login("after")
	if err := before.send(rfc6455.OpText, `{"type":"offer","name":"after","offer":{"type":"offer","sdp":"v=0"}}`); err != nil {
		t.Fatal(err)
	}
	if m := after.readText(); !strings.Contains(m, `"type":"offer"`) {
		t.Fatalf("after got %s", m)
	}
}

// TestResetDuringBurst: clients that send a burst of frames, each in its own write, and then reset the
// connection (SO_LINGER 0) are all torn down within a moment: the server holds no connection and no user name
// of theirs, and shuts down promptly. Whatever the server was writing back when the reset came (error replies,
// pongs), the failed write must not leave the connection behind.
func TestResetDuringBurst(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.Rate = 0 })
	bursts := []struct {
		name  string
		op    byte
		frame string
	}{
		{"logged-in messages", rfc6455.OpText, `{"type":"offer","name":"nobody","offer":{"type":"offer","sdp":"x"}}`},
		{"unknown types", rfc6455.OpText, `{"type":"frobnicate"}`},
		{"pings", rfc6455.OpPing, "ping"},
	}
	const clients, frames = 60, 300
	var wg sync.WaitGroup
	for i := range clients {
		b := bursts[i%len(bursts)]
		c := r.rawDial()
		c.login(fmt.Sprintf("burst%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range frames {
				if c.send(b.op, b.frame) != nil {
					break
				}
			}
			c.reset()
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(3 * time.Second)
	for r.Connections() != 0 || r.Online() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("3s after the resets: %d connections and %d users still held", r.Connections(), r.Online())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The names are free again.
	again := r.rawDial()
	again.login("burst0")
	again.reset()
	start := time.Now()
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

// TestLoginTimeout: a connection that does not log in within -login-timeout is closed with 1008 and a reason a
// person can read; one that logged in stays, and the timeouts are counted in the metrics.
func TestLoginTimeout(t *testing.T) {
	t.Parallel()
	// 1 s: the second user below must dial and log in within it after the lurker is closed, which under the race
	// detector on a loaded machine took more than 300 ms.
	r := startServer(t, func(c *server.Config) { c.LoginTimeout = time.Second })
	in := r.rawDial()
	in.login("in-time")
	start := time.Now() // (before the dial: the server's clock starts when it accepts the connection)
	lurker := r.rawDial()
	code, reason := lurker.expectClose()
	if code != 1008 || reason != "log in within 1s" {
		t.Fatalf("close %d %q, want 1008 \"log in within 1s\"", code, reason)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("closed after %v", d)
	}
	// The user who logged in at the same moment is still there.
	other := r.rawDial()
	other.login("other")
	if err := in.send(rfc6455.OpText, `{"type":"offer","name":"other","offer":{"type":"offer","sdp":"v=0"}}`); err != nil {
		t.Fatal(err)
	}
	if m := other.readText(); !strings.Contains(m, `"type":"offer"`) {
		t.Fatalf("other got %s", m)
	}
	if body := r.get("/metrics"); !strings.Contains(body, "tandem_login_timeouts_total 1") || !strings.Contains(body, "tandem_panics_total 0") {
		t.Fatalf("metrics do not count the login timeout")
	}
}

// TestUnloggedCapPerAddress: connections from one address that have not logged in are capped (here loopback is
// held to the per-address caps, as -limit-loopback does); one more is refused with 429 and a text, and logging in
// makes room.
func TestUnloggedCapPerAddress(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) { c.MaxUnloggedPerAddr, c.LimitLoopback = 2, true })
	first := r.rawDial()
	r.rawDial()
	refused := func() string {
		nc := r.dialTCP()
		if _, err := io.WriteString(nc, rawHandshake("dGhlIHNhbXBsZSBub25jZQ==")); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusTooManyRequests {
			return ""
		}
		return string(body)
	}
	if body := refused(); !strings.Contains(body, "not logged in") {
		t.Fatalf("a third connection waiting to log in was not refused with 429 (%q)", body)
	}
	first.login("first")
	r.rawDial()
	if body := refused(); body == "" {
		t.Fatal("a fourth was not refused")
	}
}
