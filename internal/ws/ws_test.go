package ws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/internal/rfc6455"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(cleanedUp{m}) }

// afterTests are run once every test has, before goleak looks for goroutines left behind (servers shared by
// the calls of a fuzz target).
var afterTests []func()

type cleanedUp struct{ m *testing.M }

func (c cleanedUp) Run() int {
	code := c.m.Run()
	for _, f := range afterTests {
		f()
	}
	return code
}

// events records what a connection's handler was told.
type events struct {
	c    *Conn
	echo bool // send each text message back
	mu   sync.Mutex
	msgs []string
	bin  int
	big  int
	ch   chan string // every event, as text
}

func (e *events) OnText(msg []byte) {
	e.mu.Lock()
	e.msgs = append(e.msgs, string(msg))
	e.mu.Unlock()
	if e.echo {
		e.c.Send(msg)
	}
	e.ch <- "text:" + string(msg)
}
func (e *events) OnBinary()      { e.ch <- "binary" }
func (e *events) OnTooLarge(int) { e.c.Send([]byte("too large")); e.ch <- "too large" }
func (e *events) OnClose()       { e.ch <- "close" }
func (e *events) wait(t *testing.T) string {
	t.Helper()
	select {
	case ev := <-e.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event from the server within 5s")
		return ""
	}
}

// modes runs a test with connections upgraded through net/http onto the epoll loop or onto goroutines, and with
// connections accepted and upgraded by the epoll loop itself (Listen).
var modes = []struct {
	name    string
	noEpoll bool
	door    bool
	park    bool // Config.ParkIdleLoops
}{{"epoll", false, false, false}, {"goroutines", true, false, false}, {"door", false, true, false},
	{"door, parked loops", false, true, true}}

type harness struct {
	srv    *Server
	url    string
	events chan *events
}

func start(t *testing.T, cfg Config, echo bool) *harness {
	t.Helper()
	return startDoor(t, cfg, echo, false)
}

// startDoor starts a server; with door, its epoll loop accepts the connections and answers the handshakes to
// every path but /http, and net/http is given the other requests.
func startDoor(t *testing.T, cfg Config, echo, door bool) *harness {
	t.Helper()
	return startWith(t, cfg, echo, door, nil)
}

// startWith is startDoor with each connection's Handler made by wrap from the recording one (nil: that one).
func startWith(t *testing.T, cfg Config, echo, door bool, wrap func(*events) Handler) *harness {
	t.Helper()
	srv := newServer(t, cfg)
	h := &harness{srv: srv, events: make(chan *events, 16)}
	newHandler := func(c *Conn) Handler {
		e := &events{c: c, echo: echo, ch: make(chan string, 1024)}
		h.events <- e
		if wrap != nil {
			return wrap(e)
		}
		return e
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/http" {
			fmt.Fprint(w, "served by net/http")
			return
		}
		_ = srv.Upgrade(w, r, newHandler)
	}))
	if door {
		ln, err := srv.Listen(hs.Listener, func(r *Request) func(*Conn) Handler {
			if r.Path == "/http" {
				return nil
			}
			return newHandler
		})
		if err != nil {
			t.Fatal(err)
		}
		hs.Listener = ln
	}
	hs.Start()
	h.url = hs.URL
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx, CloseGoingAway, "bye"); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return h
}

// newServer makes a server with cfg and starts it.
func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	return srv
}

func (h *harness) next(t *testing.T) *events {
	t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no connection reached the server")
		return nil
	}
}

// rawClient speaks WebSocket byte by byte, so tests can send what no library would.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, url string, early []byte) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(append([]byte(handshakeRequest), early...)); err != nil {
		t.Fatal(err)
	}
	return expectUpgrade(t, nc, bufio.NewReader(nc))
}

// expectUpgrade reads the answer to a handshake and returns a client for the connection.
func expectUpgrade(t *testing.T, nc net.Conn, br *bufio.Reader) *rawClient {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %s, accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	_ = nc.SetReadDeadline(time.Time{})
	return &rawClient{t: t, nc: nc, br: br}
}

// frame encodes one client frame, masked unless mask is false.
func frame(fin bool, op byte, payload []byte, mask bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if mask {
		m = 0x80
	}
	switch l := len(payload); {
	case l < 126:
		out = append(out, m|byte(l))
	case l < 1<<16:
		out = append(out, m|126, byte(l>>8), byte(l))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(l))
	}
	if !mask {
		return append(out, payload...)
	}
	key := []byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, key...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next frame from the server.
func (c *rawClient) read() (op byte, payload []byte, err error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(c.br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(c.br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return h[0] & 0x0f, payload, err
}

// expectClose reads until a close frame and returns its code.
func (c *rawClient) expectClose() int {
	c.t.Helper()
	for {
		op, p, err := c.read()
		if err != nil {
			c.t.Fatalf("expected a close frame, got %v", err)
		}
		if op == rfc6455.OpClose {
			if len(p) < 2 {
				return CloseNoStatus
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

func (c *rawClient) expectText(want string) {
	c.t.Helper()
	op, p, err := c.read()
	if err != nil || op != rfc6455.OpText || string(p) != want {
		c.t.Fatalf("got op %d %q (%v), want text %q", op, p, err, want)
	}
}

func TestMessages(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park}, true, mode.door)
			if mode.park && len(h.srv.pollers) > 0 && !h.srv.pollers[0].isParked() {
				t.Fatal("the loops do not wait parked in the runtime's poller")
			}
			// A message sent together with the handshake must not be lost.
			c := dialRaw(t, h.url, frame(true, rfc6455.OpText, []byte("early"), true))
			e := h.next(t)
			if ev := e.wait(t); ev != "text:early" {
				t.Fatalf("got %q", ev)
			}
			c.expectText("early")

			// Sizes on each side of the length encodings, byte by byte for the first.
			for _, n := range []int{0, 125, 126, 65535, 65536} {
				msg := strings.Repeat("x", n)
				f := frame(true, rfc6455.OpText, []byte(msg), true)
				if n == 125 {
					for i := range f {
						c.send(f[i : i+1])
					}
				} else {
					c.send(f)
				}
				if ev := e.wait(t); ev != "text:"+msg {
					t.Fatalf("size %d: got %d bytes", n, len(ev))
				}
				c.expectText(msg)
			}

			// A fragmented message with a ping in the middle.
			c.send(frame(false, rfc6455.OpText, []byte("hel"), true))
			c.send(frame(true, rfc6455.OpPing, []byte("p"), true))
			c.send(frame(false, rfc6455.OpContinuation, []byte("lo "), true))
			c.send(frame(true, rfc6455.OpContinuation, []byte("wörld"), true))
			if op, p, _ := c.read(); op != rfc6455.OpPong || string(p) != "p" {
				t.Fatalf("want pong p, got %d %q", op, p)
			}
			if ev := e.wait(t); ev != "text:hello wörld" {
				t.Fatalf("got %q", ev)
			}
			c.expectText("hello wörld")

			c.send(frame(true, rfc6455.OpBinary, []byte{1, 2, 3}, true))
			if ev := e.wait(t); ev != "binary" {
				t.Fatalf("got %q", ev)
			}

			// Closing handshake started by the client.
			c.send(frame(true, rfc6455.OpClose, []byte{0x03, 0xe8}, true))
			if code := c.expectClose(); code != CloseNormal {
				t.Fatalf("close code %d", code)
			}
			if ev := e.wait(t); ev != "close" {
				t.Fatalf("got %q", ev)
			}
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	big := frame(true, rfc6455.OpText, bytes.Repeat([]byte("x"), 2000), true)
	tests := []struct {
		name string
		data []byte
		code int
	}{
		{"unmasked", frame(true, rfc6455.OpText, []byte("hi"), false), CloseProtocolError},
		{"reserved bits", append([]byte{0xC1}, frame(true, rfc6455.OpText, []byte("hi"), true)[1:]...), CloseProtocolError},
		{"unknown opcode", frame(true, 0x3, []byte("hi"), true), CloseProtocolError},
		{"fragmented ping", frame(false, rfc6455.OpPing, nil, true), CloseProtocolError},
		{"long ping", frame(true, rfc6455.OpPing, bytes.Repeat([]byte("x"), 126), true), CloseProtocolError},
		{"stray continuation", frame(true, rfc6455.OpContinuation, []byte("x"), true), CloseProtocolError},
		{"interleaved message", append(frame(false, rfc6455.OpText, []byte("a"), true), frame(true, rfc6455.OpText, []byte("b"), true)...), CloseProtocolError},
		{"invalid utf-8", frame(true, rfc6455.OpText, []byte{0xff, 0xfe}, true), CloseInvalidData},
		{"too large", big, CloseTooBig},
		{"too large in fragments", append(frame(false, rfc6455.OpText, big[:800], true), frame(false, rfc6455.OpContinuation, big[:800], true)...), CloseTooBig},
		{"bad close code", frame(true, rfc6455.OpClose, []byte{0x03, 0xed}, true), CloseProtocolError},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, MaxMessage: 1024}, false, mode.door)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					c := dialRaw(t, h.url, nil)
					e := h.next(t)
					c.send(tt.data)
					if code := c.expectClose(); code != tt.code {
						t.Errorf("close code %d, want %d", code, tt.code)
					}
					c.send(frame(true, rfc6455.OpClose, []byte{0x03, 0xe8}, true))
					for ev := e.wait(t); ev != "close"; ev = e.wait(t) {
						if ev != "too large" {
							t.Errorf("unexpected event %q", ev)
						}
					}
				})
			}
		})
	}
}

func TestTooLargeTellsClientFirst(t *testing.T) {
	h := start(t, Config{MaxMessage: 16}, false)
	c := dialRaw(t, h.url, nil)
	h.next(t)
	c.send(frame(true, rfc6455.OpText, []byte(strings.Repeat("y", 17)), true))
	c.expectText("too large")
	if code := c.expectClose(); code != CloseTooBig {
		t.Fatalf("close code %d", code)
	}
}

func TestKeepalive(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			// The idle timeout is long enough that a loaded machine's scheduling delays (seen: over 300 ms with the
			// race detector and a load average of 17) do not make the live client look dead.
			const ping, idle = 100 * time.Millisecond, 1500 * time.Millisecond
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, PingInterval: ping, IdleTimeout: idle}, false, mode.door)

			// A client that answers pings stays; one that does not is dropped.
			alive := dialRaw(t, h.url, nil)
			ea := h.next(t)
			pings := make(chan error, 1)
			go func() {
				n := 0
				for {
					op, p, err := alive.read()
					if err != nil {
						pings <- fmt.Errorf("the live client lost its connection after %d pings: %w", n, err)
						return
					}
					if op == rfc6455.OpPing {
						if n++; n == 20 {
							pings <- nil
							return
						}
						if _, err := alive.nc.Write(frame(true, rfc6455.OpPong, p, true)); err != nil {
							pings <- err
							return
						}
					}
				}
			}()
			dead := dialRaw(t, h.url, nil)
			ed := h.next(t)
			start := time.Now()
			for ed.wait(t) != "close" {
			}
			if d := time.Since(start); d < idle-ping {
				t.Errorf("dropped after %v, before the idle timeout", d)
			}
			// The dead one is really gone.
			_ = dead.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(dead.br); err != nil && !isReset(err) {
				t.Fatalf("dead connection: %v", err)
			}
			// 20 pings, 100 ms apart, outlast the idle timeout.
			if err := <-pings; err != nil {
				t.Fatal(err)
			}
			select {
			case ev := <-ea.ch:
				t.Fatalf("the live client got %q", ev)
			default:
			}
		})
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "reset") }

func TestSlowReaderIsDropped(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, SendQueue: 64 << 10}, false, mode.door)
			c := dialRaw(t, h.url, nil) // never reads
			e := h.next(t)
			msg := bytes.Repeat([]byte("z"), 32<<10)
			sent := 0
			for ; sent < 10000; sent++ {
				if !e.c.Send(msg) {
					break
				}
			}
			if sent == 10000 {
				t.Fatal("320 MB queued for a client that does not read")
			}
			if ev := e.wait(t); ev != "close" {
				t.Fatalf("got %q", ev)
			}
			if h.srv.SlowDrops() != 1 {
				t.Errorf("SlowDrops = %d", h.srv.SlowDrops())
			}
			if q := h.srv.Queued(); q != 0 {
				t.Errorf("%d bytes still counted as queued after the connection went", q)
			}
			_ = c
		})
	}
}

// TestTotalQueueBound: with many slow readers, the bytes queued for all of them together stay bounded; here
// the total bound (64 KiB) is below one connection's (1 MiB), so it is the one that drops the client.
func TestTotalQueueBound(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, SendQueue: 1 << 20, TotalQueue: 64 << 10}, false, mode.door)
			dialRaw(t, h.url, nil) // never reads
			e := h.next(t)
			msg := bytes.Repeat([]byte("q"), 16<<10)
			for i := 0; e.c.Send(msg); i++ {
				if q := h.srv.Queued(); q > 64<<10 {
					t.Fatalf("%d bytes queued, over the 64 KiB total", q)
				}
				if i == 100000 {
					t.Fatal("never dropped")
				}
			}
			if ev := e.wait(t); ev != "close" {
				t.Fatalf("got %q", ev)
			}
			if q := h.srv.Queued(); q != 0 {
				t.Errorf("%d bytes still counted as queued", q)
			}
		})
	}
}

// shutDown shuts srv down while c, whose server side e records, is open: c is closed with 1001 (going away), its
// answer completes the close, Shutdown returns without error, and the handler is told last.
func shutDown(t *testing.T, srv *Server, c *rawClient, e *events) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx, CloseGoingAway, "bye")
	}()
	if code := c.expectClose(); code != CloseGoingAway {
		t.Fatalf("close code %d", code)
	}
	c.send(frame(true, rfc6455.OpClose, []byte{0x03, 0xe9}, true))
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if ev := e.wait(t); ev != "close" {
		t.Fatalf("got %q", ev)
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	for _, mode := range modes {
		if mode.door {
			continue // TestDoorShutdown
		}
		t.Run(mode.name, func(t *testing.T) {
			srv := newServer(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park}) // shut down by the test
			evs := make(chan *events, 4)
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = srv.Upgrade(w, r, func(c *Conn) Handler {
					e := &events{c: c, ch: make(chan string, 16)}
					evs <- e
					return e
				})
			}))
			defer hs.Close()
			c := dialRaw(t, hs.URL, nil)
			e := <-evs
			shutDown(t, srv, c, e)
			if srv.Len() != 0 {
				t.Fatalf("%d connections left", srv.Len())
			}
			// After shutdown, upgrades are refused.
			resp, err := http.Get(hs.URL)
			if err == nil {
				resp.Body.Close()
			}
		})
	}
}

// A handshake answered just as Shutdown begins: the client, which has its 101, hears the shutdown's close frame
// like every other connection, not a socket closing without a word.
func TestUpgradeDuringShutdown(t *testing.T) {
	for _, mode := range modes {
		if mode.door {
			continue // the loop's handshakes are connections Shutdown closes itself (TestDoorShutdown)
		}
		t.Run(mode.name, func(t *testing.T) {
			srv := newServer(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park}) // shut down by the test
			answered, shutDown := make(chan struct{}), make(chan error, 1)
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = srv.Upgrade(w, r, func(c *Conn) Handler {
					close(answered) // the 101 is written; Shutdown now runs before c is counted
					shutDown <- srv.Shutdown(context.Background(), CloseGoingAway, "bye")
					return &events{c: c, ch: make(chan string, 16)}
				})
			}))
			defer hs.Close()
			c := dialRaw(t, hs.URL, nil)
			<-answered
			if code := c.expectClose(); code != CloseGoingAway {
				t.Fatalf("close code %d, want %d", code, CloseGoingAway)
			}
			if err := <-shutDown; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		})
	}
}

// TestHandshakeRefusals: what is not a WebSocket handshake gets an HTTP error, from Upgrade through net/http
// whether or not the epoll loop read the request first.
func TestHandshakeRefusals(t *testing.T) {
	for _, door := range []bool{false, true} {
		t.Run(fmt.Sprint("door=", door), func(t *testing.T) { testHandshakeRefusals(t, door) })
	}
}

func testHandshakeRefusals(t *testing.T, door bool) {
	h := startDoor(t, Config{}, false, door)
	for _, tt := range []struct {
		name   string
		header map[string]string
		status int
	}{
		{"plain GET", nil, http.StatusUpgradeRequired},
		{"old version", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, http.StatusUpgradeRequired},
		{"bad key", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"}, http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", h.url, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
}

// panicky is a Handler with a bug: it panics on the message "boom", and when told its connection closed after
// the message "boom on close".
type panicky struct {
	*events
	onClose bool
}

func (p *panicky) OnText(msg []byte) {
	switch string(msg) {
	case "boom":
		panic("the handler broke on " + string(msg))
	case "boom on close":
		p.onClose = true
	}
	p.events.OnText(msg)
}

func (p *panicky) OnClose() {
	p.events.OnClose()
	if p.onClose {
		panic("the handler broke on close")
	}
}

// syncBuffer is a log that tests read while the server writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestHandlerPanic: a Handler that panics while handling one connection's message costs that connection alone:
// it is closed with 1011, the panic is logged with its stack and counted, and the other connections, on the same
// loop, carry on. A panic when the handler is told of the close is contained as well.
func TestHandlerPanic(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			var log syncBuffer
			cfg := Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, Pollers: 1, CloseTimeout: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&log, nil))}
			h := startWith(t, cfg, true, mode.door, func(e *events) Handler { return &panicky{events: e} })
			other := dialRaw(t, h.url, nil)
			eo := h.next(t)
			bad := dialRaw(t, h.url, nil)
			eb := h.next(t)

			bad.send(frame(true, rfc6455.OpText, []byte("hello"), true))
			bad.expectText("hello")
			bad.send(append(frame(true, rfc6455.OpText, []byte("boom"), true), frame(true, rfc6455.OpText, []byte("after"), true)...))
			if code := bad.expectClose(); code != CloseInternal {
				t.Fatalf("close code %d, want %d", code, CloseInternal)
			}
			bad.send(frame(true, rfc6455.OpClose, []byte{0x03, 0xf3}, true))
			for ev := eb.wait(t); ev != "close"; ev = eb.wait(t) {
				if ev != "text:hello" {
					t.Fatalf("the broken connection's handler got %q", ev)
				}
			}
			if n := h.srv.Panics(); n != 1 {
				t.Fatalf("Panics() = %d, want 1", n)
			}
			if l := log.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "the handler broke on boom") || !strings.Contains(l, "panicky).OnText") {
				t.Fatalf("the panic is not logged at error level with its stack:\n%s", l)
			}

			// The other connection, on the same loop, is untouched; so is one made afterwards.
			other.send(frame(true, rfc6455.OpText, []byte("still here"), true))
			other.expectText("still here")
			if ev := eo.wait(t); ev != "text:still here" {
				t.Fatalf("got %q", ev)
			}
			third := dialRaw(t, h.url, nil)
			e3 := h.next(t)
			third.send(frame(true, rfc6455.OpText, []byte("boom on close"), true))
			third.expectText("boom on close")
			third.send(frame(true, rfc6455.OpClose, []byte{0x03, 0xe8}, true))
			if code := third.expectClose(); code != CloseNormal {
				t.Fatalf("close code %d", code)
			}
			for ev := e3.wait(t); ev != "close"; ev = e3.wait(t) {
			}
			waitUntil(t, func() bool { return h.srv.Panics() == 2 })
			other.send(frame(true, rfc6455.OpText, []byte("and still"), true))
			other.expectText("and still")
			if n := h.srv.Len(); n != 1 {
				t.Fatalf("Len() = %d, want 1", n)
			}
		})
	}
}

// waitUntil polls cond, for state the server reaches with no event a client could wait on (5 s at most).
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMessageTimeout: a frame, or a fragmented message, begun and never finished is not held for ever: the
// connection is closed with 1008 once MessageTimeout has passed, and the bytes it held are let go.
func TestMessageTimeout(t *testing.T) {
	half := frame(true, rfc6455.OpText, []byte(strings.Repeat("h", 300)), true)[:150]
	fragment := frame(false, rfc6455.OpText, []byte("first part"), true)
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, MessageTimeout: 300 * time.Millisecond, CloseTimeout: 200 * time.Millisecond}, true, mode.door)
			for _, start := range [][]byte{half, fragment} {
				c := dialRaw(t, h.url, nil)
				e := h.next(t)
				c.send(frame(true, rfc6455.OpText, []byte("whole"), true))
				c.expectText("whole")
				began := time.Now()
				c.send(start)
				op, p, err := c.read()
				if err != nil || op != rfc6455.OpClose || binary.BigEndian.Uint16(p) != ClosePolicy || string(p[2:]) != "a message must arrive whole within 300ms" {
					t.Fatalf("got op %d %q (%v), want a close 1008 saying why", op, p, err)
				}
				if d := time.Since(began); d < 300*time.Millisecond {
					t.Fatalf("closed after %v, before the timeout", d)
				}
				c.send(frame(true, rfc6455.OpClose, []byte{0x03, 0xe8}, true))
				for e.wait(t) != "close" {
				}
			}
			waitUntil(t, func() bool { return h.srv.Partial() == 0 })
		})
	}
}

// TestTotalPartialBound: the bytes held for frames not yet whole, over all connections, are bounded: the
// connection whose frame would take the total over TotalPartial is closed with 1013 (try again later), and the
// others carry on.
func TestTotalPartialBound(t *testing.T) {
	msg := []byte(strings.Repeat("p", 3000))
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, TotalPartial: 4096, CloseTimeout: 200 * time.Millisecond}, true, mode.door)
			a := dialRaw(t, h.url, nil)
			ea := h.next(t)
			b := dialRaw(t, h.url, nil)
			h.next(t)
			fa, fb := frame(true, rfc6455.OpText, msg, true), frame(true, rfc6455.OpText, msg, true)
			a.send(fa[:2000])
			waitUntil(t, func() bool { return h.srv.Partial() >= 2000 })
			b.send(fb[:2500])
			op, p, err := b.read()
			if err != nil || op != rfc6455.OpClose || binary.BigEndian.Uint16(p) != CloseTryAgainLater {
				t.Fatalf("got op %d %q (%v), want a close 1013", op, p, err)
			}
			if q := h.srv.Partial(); q > 4096 {
				t.Fatalf("%d bytes held, over the 4096 bound", q)
			}
			a.send(fa[2000:])
			a.expectText(string(msg))
			if ev := ea.wait(t); ev != "text:"+string(msg) {
				t.Fatalf("got %q", ev)
			}
			if n := h.srv.PartialDrops(); n != 1 {
				t.Fatalf("PartialDrops() = %d", n)
			}
			waitUntil(t, func() bool { return h.srv.Partial() == 0 })
		})
	}
}

// TestConnectionCaps: past MaxConns, and past the per-address caps, a handshake is refused with an HTTP status
// and a text saying why, whether the epoll loop or net/http read it; loopback clients are exempt from the
// per-address caps unless LimitLoopback is set.
func TestConnectionCaps(t *testing.T) {
	handshake := func(h *harness) (int, string) {
		nc, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		if _, err := io.WriteString(nc, handshakeRequest); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Run("total", func(t *testing.T) {
				h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, MaxConns: 2, MaxUnlogged: 10, CloseTimeout: 200 * time.Millisecond}, false, mode.door)
				for range 2 {
					if code, body := handshake(h); code != http.StatusSwitchingProtocols {
						t.Fatalf("%d %q", code, body)
					}
				}
				if code, body := handshake(h); code != http.StatusServiceUnavailable || !strings.Contains(body, "as many connections as it can take") {
					t.Fatalf("over MaxConns: %d %q", code, body)
				}
				if n := h.srv.Refused(); n != 1 {
					t.Fatalf("Refused() = %d", n)
				}
			})
			t.Run("per address", func(t *testing.T) {
				h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, MaxConnsPerAddr: 3, MaxUnloggedPerAddr: 2, LimitLoopback: true, CloseTimeout: 200 * time.Millisecond}, false, mode.door)
				handshake(h)
				first := h.next(t)
				handshake(h)
				h.next(t)
				if code, body := handshake(h); code != http.StatusTooManyRequests || !strings.Contains(body, "not logged in") {
					t.Fatalf("a third waiting to log in: %d %q", code, body)
				}
				first.c.LoggedIn()
				if code, body := handshake(h); code != http.StatusSwitchingProtocols {
					t.Fatalf("after a login: %d %q", code, body)
				}
				first.c.LoggedIn() // again: counted once
				if code, body := handshake(h); code != http.StatusTooManyRequests || !strings.Contains(body, "too many connections from your address") {
					t.Fatalf("a fourth: %d %q", code, body)
				}
			})
			t.Run("loopback exempt", func(t *testing.T) {
				h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, MaxConnsPerAddr: 1, MaxUnloggedPerAddr: 1, CloseTimeout: 200 * time.Millisecond}, false, mode.door)
				for range 3 {
					if code, body := handshake(h); code != http.StatusSwitchingProtocols {
						t.Fatalf("%d %q", code, body)
					}
				}
			})
		})
	}
}
