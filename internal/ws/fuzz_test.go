//go:build linux

package ws

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"tandem/internal/rfc6455"
)

// fuzzLimit is the message size limit of the frame fuzzers.
const fuzzLimit = 256

// readerRun is what tandem's frame reader made of a client's byte stream: the messages it delivered and the
// first close frame it sent (code 0 for none).
type readerRun struct {
	texts      []string
	binaries   int
	closeCode  int
	unfinished bool // the stream ended inside a data message, after a frame header (tandem's reader)
	cutShort   bool // the stream ended inside a frame (tandem's reader)
}

// runReader feeds chunks to a connection's frame reader, as its loop would, then ends the stream as a client
// hanging up does. The connection writes to one end of a socket pair, so its answers (pongs, close frames) are
// read back whole. It checks the reader's invariants as it goes.
func runReader(t *testing.T, chunks ...[]byte) readerRun {
	t.Helper()
	c, e, peer := readerConn(t)
	srv := c.srv
	for _, chunk := range chunks {
		ok := c.onData(append([]byte(nil), chunk...))
		if c.held != cap(c.in)+cap(c.frag) || srv.Partial() != int64(c.held) {
			t.Fatalf("held %d, buffers %d, server total %d", c.held, cap(c.in)+cap(c.frag), srv.Partial())
		}
		if len(c.in) > fuzzLimit+14 && c.skip == 0 {
			t.Fatalf("%d bytes kept for a frame with a %d-byte limit", len(c.in), fuzzLimit)
		}
		if len(c.frag) > fuzzLimit {
			t.Fatalf("%d bytes kept for a fragmented message with a %d-byte limit", len(c.frag), fuzzLimit)
		}
		if !ok {
			break
		}
	}
	unfinished := c.fragOp != 0 || dataHeaderWhole(c.in) || c.skip > 0
	cutShort := len(c.in) > 0 || c.skip > 0
	c.teardown()
	if p := srv.Partial(); p != 0 {
		t.Fatalf("%d bytes still counted as held after teardown", p)
	}
	run := readerRun{unfinished: unfinished, cutShort: cutShort}
	for _, m := range e.msgs {
		if len(m) > fuzzLimit || !utf8.ValidString(m) {
			t.Fatalf("delivered %d bytes (valid UTF-8: %v) with a %d-byte limit", len(m), utf8.ValidString(m), fuzzLimit)
		}
		run.texts = append(run.texts, m)
	}
	for ev := range len(e.ch) {
		_ = ev
		if <-e.ch == "binary" {
			run.binaries++
		}
	}
	run.closeCode = firstCloseCode(t, written(peer))
	return run
}

// readerConn makes an open connection whose frame reader is driven by calling onData; what it writes goes to
// the other end of a socket pair, peer (closed when the test ends).
func readerConn(t *testing.T) (c *Conn, e *events, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	srv, err := NewServer(Config{MaxMessage: fuzzLimit, NoEpoll: true})
	if err != nil {
		t.Fatal(err)
	}
	e = &events{ch: make(chan string, 1<<16)}
	c = &Conn{srv: srv, fd: fds[0], h: e}
	e.c = c
	srv.conns[c] = struct{}{}
	return c, e, fds[1]
}

// written reads what the server has written to the socket pair so far.
func written(peer int) []byte {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(peer, buf)
		if n <= 0 || err != nil {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

// A refused frame is thrown away whole, however long it says it is, even when its header comes alone: the bytes
// after the header are its payload, never frames (a close frame among them does not end the connection), and
// the connection reads frames again only after the last of them.
func TestRefusedFrameThrownAwayWhole(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header []byte // the header up to its length, without the mask key
		length uint64
		code   int
	}{
		{"too large, 16-bit length", []byte{0x81, 0xfe, 0x01, 0x2c}, 300, CloseTooBig},
		{"too large, 64-bit length", []byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0x11, 0x70}, 70000, CloseTooBig},
		{"too large, the largest length", []byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1<<63 - 1, CloseTooBig},
		{"reserved bits, the largest length", []byte{0xc1, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1<<63 - 1, CloseProtocolError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _, peer := readerConn(t)
			defer c.teardown()
			closeFrame := frame(true, rfc6455.OpClose, []byte{0x03, 0xe8}, true)
			left := uint64(len(tt.header)) + 4 + tt.length
			for _, chunk := range [][]byte{tt.header, {1, 2, 3, 4}, closeFrame} {
				if !c.onData(append([]byte(nil), chunk...)) {
					t.Fatalf("the connection ended %d bytes before the end of the refused frame", left)
				}
				left -= uint64(len(chunk))
				if c.skip != left {
					t.Fatalf("%d bytes of the refused frame left to throw away, want %d", c.skip, left)
				}
			}
			if code := firstCloseCode(t, written(peer)); code != tt.code {
				t.Fatalf("close code %d, want %d", code, tt.code)
			}
			if left > 1<<20 {
				return // the client cannot send the rest in a test
			}
			if !c.onData(make([]byte, left)) {
				t.Fatal("the connection ended at the end of the refused frame")
			}
			// Frames are read again: the client's close completes the closing handshake.
			if c.onData(closeFrame) {
				t.Fatal("the client's close after the refused frame did not end the connection")
			}
		})
	}
}

// dataHeaderWhole reports whether b starts with the whole header of a data frame.
func dataHeaderWhole(b []byte) bool {
	if len(b) < 2 || b[0]&0x08 != 0 {
		return false
	}
	h := 6
	switch b[1] & 0x7f {
	case 126:
		h = 8
	case 127:
		h = 14
	}
	return len(b) >= h
}

// firstCloseCode parses the server's frames in out and returns the code of the first close frame (1005 for one
// without a code, 0 for none).
func firstCloseCode(t *testing.T, out []byte) int {
	t.Helper()
	for len(out) >= 2 {
		op, n := out[0]&0x0f, int(out[1]&0x7f)
		if out[1]&0x80 != 0 {
			t.Fatalf("the server sent a masked frame")
		}
		h := 2
		switch n {
		case 126:
			if len(out) < 4 {
				return 0
			}
			n, h = int(binary.BigEndian.Uint16(out[2:])), 4
		case 127:
			if len(out) < 10 {
				return 0
			}
			n, h = int(binary.BigEndian.Uint64(out[2:])), 10
		}
		if len(out) < h+n {
			t.Fatalf("the server sent a frame cut short")
		}
		if op == rfc6455.OpClose {
			if n < 2 {
				return CloseNoStatus
			}
			return int(binary.BigEndian.Uint16(out[h:]))
		}
		out = out[h+n:]
	}
	return 0
}

// fuzzSeeds are client byte streams for the frame fuzzers.
func fuzzSeeds() [][]byte {
	text := func(s string) []byte { return frame(true, rfc6455.OpText, []byte(s), true) }
	return [][]byte{
		text("hello"),
		append(frame(false, rfc6455.OpText, []byte("he"), true), frame(true, rfc6455.OpContinuation, []byte("llo"), true)...),
		append(text("a"), frame(true, rfc6455.OpClose, []byte{3, 232, 'o', 'k'}, true)...),
		frame(true, rfc6455.OpClose, nil, true),
		frame(true, rfc6455.OpClose, []byte{3, 237}, true),
		append(frame(true, rfc6455.OpPing, []byte("x"), true), text("after ping")...),
		append(frame(false, rfc6455.OpText, []byte("he"), true), append(frame(true, rfc6455.OpPing, nil, true), frame(true, rfc6455.OpContinuation, []byte("y"), true)...)...),
		frame(true, rfc6455.OpBinary, []byte{1, 2, 3}, true),
		text(strings.Repeat("z", fuzzLimit+1)),
		text(strings.Repeat("é", 100)),
		frame(true, rfc6455.OpText, []byte("unmasked"), false),
		{0xC1, 0x80, 0, 0, 0, 0},
		{0x83, 0x80, 0, 0, 0, 0},
		{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0},
		append(text(string([]byte{0xff})), text("never")...),
	}
}

// FuzzFrames feeds a client's byte stream to the frame reader whole and split at an arbitrary point: it must
// never panic; every message it delivers is valid UTF-8 within the limit; what it keeps for unfinished frames and
// messages stays within the limit and is counted exactly; and where the stream is split changes nothing (the
// same messages, the same close code).
func FuzzFrames(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add(s, i)
	}
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		if split < 0 {
			split = -split
		}
		split %= len(data) + 1
		whole := runReader(t, data)
		parts := runReader(t, data[:split], data[split:])
		if !slices.Equal(whole.texts, parts.texts) || whole.binaries != parts.binaries || whole.closeCode != parts.closeCode {
			t.Fatalf("whole: %+v; split at %d: %+v", whole, split, parts)
		}
	})
}

// coderServer is a WebSocket server written with github.com/coder/websocket on 127.0.0.1, for comparison: it
// reports what it read from each connection.
type coderServer struct {
	url  string
	runs chan readerRun
}

var (
	coderOnce sync.Once
	coder     *coderServer
)

// startCoder starts the comparison server once for the whole test binary (the fuzzer calls the target many
// times); it lives until the process ends.
func startCoder() *coderServer {
	coderOnce.Do(func() {
		coder = &coderServer{runs: make(chan readerRun, 1)}
		hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			conn.SetReadLimit(fuzzLimit)
			var run readerRun
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for {
				typ, msg, err := conn.Read(ctx)
				if err != nil {
					break
				}
				if typ == websocket.MessageText {
					run.texts = append(run.texts, string(msg))
				} else {
					run.binaries++
				}
			}
			conn.CloseNow()
			coder.runs <- run
		}))
		hs.Listener = lingeringListener{hs.Listener}
		hs.Start()
		coder.url = hs.URL
		afterTests = append(afterTests, hs.Close)
	})
	return coder
}

// lingeringListener's connections close as tandem's do: the close frame is followed by a FIN and what the client
// still sends is read and dropped before the socket is closed. coder/websocket closes at once, and a socket closed
// with bytes it has not read sends a reset, which can make the client lose the close frame before it reads it
// (a client stream with 4 KB after a refused frame did): the comparison is of what the servers send, not of that.
type lingeringListener struct{ net.Listener }

func (l lingeringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingeringConn{Conn: c}, nil
}

type lingeringConn struct {
	net.Conn
	once sync.Once
	err  error
}

func (c *lingeringConn) Close() error {
	c.once.Do(func() {
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
			_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, tc)
		}
		c.err = c.Conn.Close()
	})
	return c.err
}

// runCoder sends data to coder/websocket's server after a handshake, ends the stream, and returns what it read
// and the code of the first close frame it sent.
func runCoder(t *testing.T, data []byte) readerRun {
	t.Helper()
	cs := startCoder()
	nc, err := net.Dial("tcp", strings.TrimPrefix(cs.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, handshakeRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("coder/websocket's handshake: %v %v", resp, err)
	}
	if _, err := nc.Write(data); err != nil && !errors.Is(err, unix.ECONNRESET) && !errors.Is(err, unix.EPIPE) {
		t.Fatal(err)
	}
	_ = nc.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(br)
	run := <-cs.runs
	run.closeCode = firstCloseCode(t, out)
	return run
}

// FuzzCompareCoder: on the same client byte stream, tandem's frame reader and github.com/coder/websocket's
// server deliver the same text messages (and as many binary ones) and close with the same code. The deliberate
// differences, which the comparison allows for:
//   - tandem checks that text is UTF-8 and closes with 1007 at the first message that is not; coder/websocket
//     does not check. So the comparison stops there: tandem's messages are coder's up to it.
//   - tandem also checks a close frame's reason is UTF-8 (1002 if not); coder/websocket echoes the frame.
//   - an unmasked frame, a 64-bit length with its top bit set, or a bad first byte in a header the stream then
//     cuts short: tandem closes with 1002, coder/websocket drops the connection without a close frame.
//   - a close frame without a code: tandem answers 1000, coder/websocket an empty close frame (1005 here).
//   - a message over the limit: both close with 1009; coder/websocket delivers nothing of it either.
//   - tandem judges a frame by its header as soon as it has it (1002 for bad bits, 1009 for a length over the
//     limit); coder/websocket reads on first, so a stream that ends inside that frame gets no close from it.
//   - a message the stream ends inside (after a frame header): coder/websocket delivers what came of it as a
//     whole message; tandem delivers nothing of an unfinished message (coder/websocket's fault, not a choice).
func FuzzCompareCoder(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ours, theirs := runReader(t, data), runCoder(t, data)
		if ours.unfinished && len(theirs.texts)+theirs.binaries == len(ours.texts)+ours.binaries+1 {
			// coder/websocket delivers a fragmented message the stream ends inside as if it were whole (its reader
			// takes the end of the stream for the end of the message); tandem delivers nothing of it.
			if len(theirs.texts) > len(ours.texts) {
				theirs.texts = theirs.texts[:len(theirs.texts)-1]
			} else {
				theirs.binaries--
			}
		}
		for i, m := range theirs.texts {
			if !utf8.ValidString(m) {
				if ours.closeCode != CloseInvalidData || !slices.Equal(ours.texts, theirs.texts[:i]) {
					t.Fatalf("text not UTF-8 at message %d: tandem %+v, coder/websocket %+v", i, ours, theirs)
				}
				break
			}
		}
		if ours.closeCode == CloseInvalidData {
			// tandem stopped at a text message that is not UTF-8, which coder/websocket does not look for: what
			// came before must be the same.
			if len(theirs.texts) < len(ours.texts) || !slices.Equal(ours.texts, theirs.texts[:len(ours.texts)]) {
				t.Fatalf("before the text that is not UTF-8: tandem %q, coder/websocket %q", ours.texts, theirs.texts)
			}
			return
		}
		if !slices.Equal(ours.texts, theirs.texts) || ours.binaries != theirs.binaries {
			t.Fatalf("messages: tandem %q (%d binary), coder/websocket %q (%d binary)", ours.texts, ours.binaries, theirs.texts, theirs.binaries)
		}
		want := theirs.closeCode
		switch {
		case want == CloseNoStatus:
			want = CloseNormal
		case want == 0 && ours.closeCode == CloseProtocolError && droppedByCoder(data):
			want = CloseProtocolError
		case want == 0 && (ours.closeCode == CloseProtocolError || ours.closeCode == CloseTooBig) && ours.cutShort:
			want = ours.closeCode
		case ours.closeCode == CloseProtocolError && badCloseReason(data):
			want = CloseProtocolError
		}
		if ours.closeCode != want {
			t.Fatalf("close code: tandem %d, coder/websocket %d (%+v, %+v)", ours.closeCode, theirs.closeCode, ours, theirs)
		}
	})
}

// frames walks the frames of a client stream (opcode, payload unmasked). It stops at the first frame that is
// unmasked, has an impossible length or is cut short in its header, which it reports as such (without payload).
func frames(data []byte, each func(op byte, masked bool, payload []byte, odd bool) bool) {
	for len(data) >= 2 {
		op, masked, n := data[0]&0x0f, data[1]&0x80 != 0, uint64(data[1]&0x7f)
		h := 2
		switch n {
		case 126:
			h = 4
		case 127:
			h = 10
		}
		if len(data) < h+4 {
			each(op, masked, nil, true)
			return
		}
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(data[2:]))
		case 127:
			n = binary.BigEndian.Uint64(data[2:])
		}
		if !masked || n>>63 != 0 {
			each(op, masked, nil, true)
			return
		}
		h += 4
		if uint64(len(data)-h) < n {
			return
		}
		payload := append([]byte(nil), data[h:h+int(n)]...)
		rfc6455.Mask(payload, binary.LittleEndian.Uint32(data[h-4:]))
		if !each(op, true, payload, false) {
			return
		}
		data = data[h+int(n):]
	}
	if len(data) == 1 {
		each(data[0]&0x0f, false, nil, true)
	}
}

// droppedByCoder reports whether data has a frame after which coder/websocket drops the connection without a
// close frame, where tandem may close with 1002: one that is not masked, whose 64-bit length has its top bit set,
// or whose header the stream cuts short (tandem judges a frame's first two bytes as they come; coder/websocket
// waits for its whole header, mask key included).
func droppedByCoder(data []byte) (found bool) {
	frames(data, func(_ byte, _ bool, _ []byte, odd bool) bool {
		found = odd
		return !found
	})
	return found
}

func badCloseReason(data []byte) (found bool) {
	frames(data, func(op byte, _ bool, p []byte, _ bool) bool {
		if op == rfc6455.OpClose {
			found = len(p) > 2 && !utf8.Valid(p[2:])
			return false
		}
		return true
	})
	return found
}
