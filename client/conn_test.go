package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/internal/rfc6455"
)

// These tests run the client's WebSocket framing (conn.go) against a raw TCP server on 127.0.0.1 that makes the
// handshake and writes and reads frames byte by byte as RFC 6455 lays them out, with no WebSocket library, so that
// the server can send what a library would refuse to.

const fin = 0x80 // the FIN bit of a frame's first byte

// serve starts a TCP server on 127.0.0.1 that runs script on the first connection it accepts, and returns its
// ws:// URL. The script reports with t.Errorf; the end of the test waits for it to return.
func serve(t *testing.T, script func(t *testing.T, nc net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return // the test ended without connecting
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second)) // a script waiting for a client that went wrong ends
		script(t, nc, bufio.NewReader(nc))
	}()
	return "ws://" + ln.Addr().String() + "/"
}

// upgrade reads the client's handshake request, checks it, and answers 101 with a Sec-WebSocket-Accept computed
// as RFC 6455 section 4.2.2 says, followed in the same write by the frames after. It returns the request, or nil
// if it was not a valid upgrade.
func upgrade(t *testing.T, nc net.Conn, br *bufio.Reader, after ...[]byte) *http.Request {
	t.Helper()
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Errorf("server: reading the handshake request: %v", err)
		return nil
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if nonce, err := base64.StdEncoding.DecodeString(key); err != nil || len(nonce) != 16 || req.Method != "GET" ||
		!strings.EqualFold(req.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(req.Header.Get("Connection"), "upgrade") || req.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Errorf("server: not a WebSocket handshake: %s %s %v", req.Method, req.URL, req.Header)
		return nil
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + rfcAccept(key) + "\r\n\r\n"
	write(t, nc, append([][]byte{[]byte(resp)}, after...)...)
	return req
}

// rfcAccept is the Sec-WebSocket-Accept for key, computed here as RFC 6455 section 4.2.2 says.
func rfcAccept(key string) string {
	h := sha1.New()
	io.WriteString(h, key)
	io.WriteString(h, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// srvFrame returns a frame as a server sends it: the first byte b0 (FIN, RSV bits, opcode), no mask, and payload
// with its length in the shortest form.
func srvFrame(b0 byte, payload string) []byte {
	b := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
	return append(b, payload...)
}

// closePayload is the payload of a close frame.
func closePayload(code int, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, uint16(code))) + reason
}

// write writes the frames bs to the client in one call.
func write(t *testing.T, nc net.Conn, bs ...[]byte) {
	t.Helper()
	if _, err := nc.Write(bytes.Join(bs, nil)); err != nil {
		t.Errorf("server: write: %v", err)
	}
}

// readFrame reads one frame from the client, checks that it is final, masked, without RSV bits and with its length
// in the shortest form, and returns its opcode and unmasked payload.
func readFrame(t *testing.T, br *bufio.Reader) (op byte, payload []byte, err error) {
	t.Helper()
	var h [14]byte
	if _, err := io.ReadFull(br, h[:2]); err != nil {
		return 0, nil, err
	}
	if h[0]&0xf0 != fin {
		t.Errorf("server: a frame from the client begins with %#x: want FIN and no RSV bits", h[0])
	}
	if h[1]&0x80 == 0 {
		t.Errorf("server: a frame from the client is not masked")
	}
	n, ext := uint64(h[1]&0x7f), 0
	switch n {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if _, err := io.ReadFull(br, h[2:2+ext]); err != nil {
		return 0, nil, err
	}
	switch ext {
	case 2:
		if n = uint64(binary.BigEndian.Uint16(h[2:])); n < 126 {
			t.Errorf("server: a length of %d in the 16-bit form", n)
		}
	case 8:
		if n = binary.BigEndian.Uint64(h[2:]); n <= 0xffff || n > 1<<24 {
			t.Errorf("server: a length of %d in the 64-bit form", n)
			return 0, nil, fmt.Errorf("length %d", n)
		}
	}
	var key [4]byte
	if h[1]&0x80 != 0 {
		if _, err := io.ReadFull(br, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= key[i%4]
	}
	return h[0] & 0x0f, payload, nil
}

// expectClose reads the client's next frame and reports unless it is a close frame with code.
func expectClose(t *testing.T, br *bufio.Reader, code int) {
	t.Helper()
	op, p, err := readFrame(t, br)
	switch {
	case err != nil:
		t.Errorf("server: reading the client's close frame: %v", err)
	case op != rfc6455.OpClose || len(p) < 2:
		t.Errorf("server: got a frame with opcode %#x and payload %q, want a close frame with %d", op, p, code)
	case int(binary.BigEndian.Uint16(p)) != code:
		t.Errorf("server: got a close frame with %d %q, want %d", binary.BigEndian.Uint16(p), p[2:], code)
	}
}

// dial connects to url, or fails the test; the connection is closed at the end of the test.
func dial(t *testing.T, url string, opts *Options) *Client {
	t.Helper()
	c, err := Dial(testContext(t), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// recvRaw is c.ReadRaw, where a panic fails the test instead of the whole test binary.
func recvRaw(t *testing.T, c *Client) (data []byte, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("ReadRaw panicked: %v\n%s", r, debug.Stack())
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return c.ReadRaw(testContext(t))
}

// text returns n letters, not a repeated pattern, so that a misplaced byte shows.
func text(n int) string {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return string(b)
}

// The test computes the accept key its own way (rfcAccept) and checks it against the RFC's example.
func TestRFCAccept(t *testing.T) {
	t.Parallel()
	const key, want = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // RFC 6455 section 1.3
	if got := rfcAccept(key); got != want {
		t.Errorf("the test's rfcAccept(%q) = %q, want %q", key, got, want)
	}
}

// The tutorial's server sends "Hello world" as soon as the connection opens: in the same packet as the 101.
func TestReadFrameSentWithHandshake(t *testing.T) {
	t.Parallel()
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		req := upgrade(t, nc, br, srvFrame(fin|rfc6455.OpText, "Hello world"))
		if req == nil {
			return
		}
		if got := req.Header.Get("Origin"); got != "http://example.test" {
			t.Errorf("server: Origin %q, want the one in Options.Header", got)
		}
		expectClose(t, br, 1000)
		write(t, nc, srvFrame(fin|rfc6455.OpClose, closePayload(1000, "")))
	})
	c := dial(t, url, &Options{Header: http.Header{"Origin": {"http://example.test"}}})
	if data, err := recvRaw(t, c); err != nil || string(data) != "Hello world" {
		t.Fatalf("ReadRaw = %q, %v; want Hello world", data, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestReadFragmentsWithPing(t *testing.T) {
	t.Parallel()
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		if upgrade(t, nc, br) == nil {
			return
		}
		first := srvFrame(rfc6455.OpText, `{"type":"x",`)
		write(t, nc, first[:2]) // a header apart from its payload
		write(t, nc, first[2:])
		write(t, nc, srvFrame(fin|rfc6455.OpPing, "are you there?"))
		write(t, nc, srvFrame(rfc6455.OpContinuation, `"name":"caf`+"\xc3")) // é is cut in two by the frames
		write(t, nc, srvFrame(fin|rfc6455.OpContinuation, "\xa9\"}"))
		if op, p, err := readFrame(t, br); err != nil || op != rfc6455.OpPong || string(p) != "are you there?" {
			t.Errorf("server: the client's first frame is %#x %q (%v), want a pong with the ping's payload", op, p, err)
			return
		}
		if op, p, err := readFrame(t, br); err != nil || op != rfc6455.OpText || string(p) != `{"type":"users"}` {
			t.Errorf("server: the client's second frame is %#x %q (%v), want the users request", op, p, err)
			return
		}
		expectClose(t, br, 1000)
		write(t, nc, srvFrame(fin|rfc6455.OpClose, closePayload(1000, "")))
	})
	c := dial(t, url, nil)
	if data, err := recvRaw(t, c); err != nil || string(data) != `{"type":"x","name":"café"}` {
		t.Fatalf("ReadRaw = %q, %v; want the three fragments joined", data, err)
	}
	if err := c.SendUsers(testContext(t), "", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// A message of each length at the edges of the 7-, 16- and 64-bit length forms is read, and so is the next one.
func TestReadLengths(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 125, 126, 65535, 65536, 200000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
				if upgrade(t, nc, br) == nil {
					return
				}
				write(t, nc, srvFrame(fin|rfc6455.OpText, text(n)), srvFrame(fin|rfc6455.OpText, "next"))
				io.Copy(io.Discard, br) // until the client goes
			})
			c := dial(t, url, nil)
			if data, err := recvRaw(t, c); err != nil || string(data) != text(n) {
				t.Fatalf("ReadRaw = %d bytes, %v; want the %d bytes sent", len(data), err, n)
			}
			if data, err := recvRaw(t, c); err != nil || string(data) != "next" {
				t.Fatalf("ReadRaw after a message of %d bytes = %q, %v; want next", n, data, err)
			}
		})
	}
}

// The client's messages at the edges of the length forms are framed right: readFrame checks the header.
func TestWriteLengths(t *testing.T) {
	t.Parallel()
	sizes := []int{2, 125, 126, 65535, 65536, 200000}
	msg := func(n int) string { return `"` + text(n-2) + `"` } // a JSON string of n bytes
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		if upgrade(t, nc, br) == nil {
			return
		}
		for _, n := range sizes {
			op, p, err := readFrame(t, br)
			if err != nil {
				t.Errorf("server: reading the message of %d bytes: %v", n, err)
				return
			}
			if op != rfc6455.OpText || string(p) != msg(n) {
				t.Errorf("server: got a frame with opcode %#x and %d bytes, not the text message of %d bytes sent", op, len(p), n)
			}
		}
		expectClose(t, br, 1000)
		write(t, nc, srvFrame(fin|rfc6455.OpClose, closePayload(1000, "")))
	})
	c := dial(t, url, nil)
	for _, n := range sizes {
		if err := c.Send(testContext(t), []byte(msg(n))); err != nil {
			t.Fatalf("Send(%d bytes): %v", n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestReadLimit(t *testing.T) {
	t.Parallel()
	const limit = 1000
	for _, tc := range []struct {
		name   string
		ok     []string // messages read before the one too large
		frames [][]byte
	}{
		{"one frame", []string{text(limit)}, [][]byte{
			srvFrame(fin|rfc6455.OpText, text(limit)),
			srvFrame(fin|rfc6455.OpText, text(limit+1)),
		}},
		{"fragments", []string{text(600) + text(400)}, [][]byte{
			srvFrame(rfc6455.OpText, text(600)),
			srvFrame(fin|rfc6455.OpContinuation, text(400)),
			srvFrame(rfc6455.OpText, text(400)),
			srvFrame(rfc6455.OpContinuation, text(400)),
			srvFrame(fin|rfc6455.OpContinuation, text(400)),
		}},
		{"64-bit length, no payload", nil, [][]byte{{fin | rfc6455.OpText, 127, 0, 0, 1, 0, 0, 0, 0, 0}}},
		{"64-bit length, top bit set", nil, [][]byte{{fin | rfc6455.OpText, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
				if upgrade(t, nc, br) == nil {
					return
				}
				write(t, nc, tc.frames...)
				expectClose(t, br, 1009)
				io.Copy(io.Discard, br)
			})
			c := dial(t, url, &Options{ReadLimit: limit})
			for _, want := range tc.ok {
				if data, err := recvRaw(t, c); err != nil || string(data) != want {
					t.Fatalf("ReadRaw = %d bytes, %v; want the message of %d bytes", len(data), err, len(want))
				}
			}
			if data, err := recvRaw(t, c); err == nil {
				t.Fatalf("ReadRaw = %d bytes, want an error for a message over the limit of %d", len(data), limit)
			}
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		frames [][]byte
		code   int
	}{
		{"masked frame", [][]byte{{fin | rfc6455.OpText, 0x80 | 2, 1, 2, 3, 4, '{' ^ 1, '}' ^ 2}}, 1002},
		{"RSV1", [][]byte{srvFrame(0x40|fin|rfc6455.OpText, "{}")}, 1002},
		{"RSV2", [][]byte{srvFrame(0x20|fin|rfc6455.OpText, "{}")}, 1002},
		{"RSV3", [][]byte{srvFrame(0x10|fin|rfc6455.OpText, "{}")}, 1002},
		{"ping of 126 bytes", [][]byte{srvFrame(fin|rfc6455.OpPing, text(126))}, 1002},
		{"fragmented ping", [][]byte{srvFrame(rfc6455.OpPing, "a"), srvFrame(fin|rfc6455.OpContinuation, "b")}, 1002},
		{"continuation without a message", [][]byte{srvFrame(fin|rfc6455.OpContinuation, "{}")}, 1002},
		{"message inside a message", [][]byte{srvFrame(rfc6455.OpText, "{"), srvFrame(fin|rfc6455.OpText, "}")}, 1002},
		{"unknown data opcode", [][]byte{srvFrame(fin|0x3, "{}")}, 1002},
		{"unknown control opcode", [][]byte{srvFrame(fin|0xB, "")}, 1002},
		{"invalid UTF-8", [][]byte{srvFrame(fin|rfc6455.OpText, "{\"a\":\"\xff\"}")}, 1007},
		{"invalid UTF-8 in fragments", [][]byte{srvFrame(rfc6455.OpText, "{\"a\":\"\xc3"), srvFrame(fin|rfc6455.OpContinuation, "(\"}")}, 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
				if upgrade(t, nc, br) == nil {
					return
				}
				write(t, nc, append([][]byte{srvFrame(fin|rfc6455.OpText, `{"type":"ok"}`)}, tc.frames...)...)
				expectClose(t, br, tc.code) // the first frame after the error, no pong before it
				io.Copy(io.Discard, br)
			})
			c := dial(t, url, nil)
			if data, err := recvRaw(t, c); err != nil || string(data) != `{"type":"ok"}` {
				t.Fatalf("ReadRaw = %q, %v; want the message before the bad frame", data, err)
			}
			if data, err := recvRaw(t, c); err == nil {
				t.Fatalf("ReadRaw = %q, want an error", data)
			}
		})
	}
}

func TestServerCloses(t *testing.T) {
	t.Parallel()
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		if upgrade(t, nc, br, srvFrame(fin|rfc6455.OpClose, closePayload(4000, "replaced"))) == nil {
			return
		}
		expectClose(t, br, 4000)
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("server: after the closing handshake, read %v, want EOF", err)
		}
	})
	c := dial(t, url, nil)
	_, err := recvRaw(t, c)
	var ce *CloseError
	if !errors.Is(err, ErrReplaced) || !errors.As(err, &ce) || ce.Code != 4000 || ce.Reason != "replaced" {
		t.Fatalf("ReadRaw = %v, want ErrReplaced with the reason", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after the server closed: %v", err)
	}
	if _, err := recvRaw(t, c); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadRaw after Close = %v, want ErrClosed", err)
	}
}

// Once a read has failed, the connection is gone: frames the server sent after the failure, already read into
// the client's buffer, are not returned by the next reads.
func TestReadAfterFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		first []byte // the frame that ends the connection
		code  int    // the client's close code
	}{
		{"server's close", srvFrame(fin|rfc6455.OpClose, closePayload(1001, "bye")), 1001},
		{"protocol error", srvFrame(fin|rfc6455.OpText, "\xff"), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
				// All in one write with the 101, so all of it is in the client's buffer when Dial returns.
				if upgrade(t, nc, br, tc.first, srvFrame(fin|rfc6455.OpText, "late"), srvFrame(fin|rfc6455.OpClose, closePayload(1000, ""))) == nil {
					return
				}
				expectClose(t, br, tc.code)
				io.Copy(io.Discard, br)
			})
			c := dial(t, url, nil)
			if _, err := recvRaw(t, c); err == nil {
				t.Fatal("ReadRaw succeeded, want an error")
			}
			for i := range 2 {
				if data, err := recvRaw(t, c); err == nil {
					t.Errorf("read %d after the connection ended = %q, want an error", i+2, data)
				}
			}
		})
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		reading, answer bool // a goroutine is blocked in ReadRaw; the server answers the client's close frame
	}{
		{"answered", false, true},
		{"unanswered", false, false},
		{"answered while reading", true, true},
		{"unanswered while reading", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inRead := make(chan struct{}) // the server got a pong: a ReadRaw is in progress
			url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
				if upgrade(t, nc, br) == nil {
					return
				}
				if tc.reading {
					write(t, nc, srvFrame(fin|rfc6455.OpPing, "sync"))
					if op, p, err := readFrame(t, br); err != nil || op != rfc6455.OpPong || string(p) != "sync" {
						t.Errorf("server: got %#x %q (%v), want the pong", op, p, err)
						return
					}
					close(inRead)
				}
				if op, p, err := readFrame(t, br); err != nil || op != rfc6455.OpClose || string(p) != closePayload(1000, "") {
					t.Errorf("server: got %#x %q (%v), want a close frame with 1000 and no reason", op, p, err)
					return
				}
				if tc.answer {
					write(t, nc, srvFrame(fin|rfc6455.OpClose, closePayload(1000, "")))
				}
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("server: after the client's close frame, read %v, want EOF", err)
				}
			})
			c := dial(t, url, nil)
			readErr := make(chan error, 1)
			if tc.reading {
				exited := make(chan struct{})
				go func() {
					defer close(exited)
					_, err := recvRaw(t, c)
					readErr <- err
				}()
				t.Cleanup(func() {
					c.CloseNow()
					<-exited
				})
				select {
				case <-inRead:
				case err := <-readErr:
					t.Fatalf("ReadRaw returned %v before Close", err)
				}
			}
			start := time.Now()
			closed := make(chan error, 1)
			go func() { closed <- c.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Close has not returned after 5 s")
				c.CloseNow()
				<-closed
			}
			if d := time.Since(start); tc.answer && d >= closeTimeout {
				t.Errorf("Close took %v although the server answered at once", d)
			}
			if tc.reading {
				if err := <-readErr; !errors.Is(err, ErrClosed) {
					t.Errorf("ReadRaw during Close = %v, want ErrClosed", err)
				}
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	const upgraded = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	for _, tc := range []struct {
		name   string
		answer func(key string) string
		want   []string // in the error
	}{
		{"403", func(string) string {
			return "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\norigin not allowed\n"
		}, []string{"403", "origin not allowed"}},
		{"wrong accept", func(string) string {
			return upgraded + "Sec-WebSocket-Accept: " + rfcAccept("dGhlIHNhbXBsZSBub25jZQ==") + "\r\n\r\n"
		}, nil},
		{"no Upgrade", func(key string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + rfcAccept(key) + "\r\n\r\n"
		}, nil},
		{"extension not offered", func(key string) string {
			return upgraded + "Sec-WebSocket-Accept: " + rfcAccept(key) + "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
				req, err := http.ReadRequest(br)
				if err != nil {
					t.Errorf("server: reading the handshake request: %v", err)
					return
				}
				write(t, nc, []byte(tc.answer(req.Header.Get("Sec-WebSocket-Key"))))
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("server: after a failed handshake, read %v, want EOF", err)
				}
			})
			c, err := Dial(testContext(t), url, nil)
			if err == nil {
				c.CloseNow()
				t.Fatal("Dial succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Dial error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestDialContext(t *testing.T) {
	t.Parallel()
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			t.Errorf("server: reading the handshake request: %v", err)
			return
		}
		if _, err := br.ReadByte(); err != io.EOF { // no answer: the client gives up
			t.Errorf("server: read %v, want EOF", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := Dial(ctx, url, nil)
	if err == nil {
		c.CloseNow()
		t.Fatal("Dial succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial returned %v after the context's deadline", d)
	}
}

func TestSkipBinary(t *testing.T) {
	t.Parallel()
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		if upgrade(t, nc, br) == nil {
			return
		}
		write(t, nc,
			srvFrame(fin|rfc6455.OpBinary, `{"type":"binary"}`),
			srvFrame(rfc6455.OpBinary, "\x00\xff"), // binary need not be UTF-8
			srvFrame(fin|rfc6455.OpContinuation, "\xfe"),
			srvFrame(fin|rfc6455.OpText, `{"type":"text"}`))
		io.Copy(io.Discard, br)
	})
	c := dial(t, url, nil)
	if data, err := recvRaw(t, c); err != nil || string(data) != `{"type":"text"}` {
		t.Fatalf("ReadRaw = %q, %v; want the text message after the binary ones", data, err)
	}
}
