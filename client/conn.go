package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"tandem/internal/rfc6455"
)

// conn is the client end of one WebSocket connection (RFC 6455), written for this client's pattern of use: one
// reader, whole messages written under a lock, no extensions. Frames are read from one buffer and a message that
// came in one frame is returned in place; a frame is written with one write call.
type conn struct {
	nc    net.Conn
	sock  io.ReadWriter // reads and writes nc
	limit int           // the largest message accepted

	rmu     sync.Mutex // one reader at a time (Close reads the server's close frame if nobody else does)
	buf     []byte     // bytes read from nc; buf[r:w] not yet consumed
	r, w    int
	msg     []byte        // a message assembled from fragments
	frag    byte          // the opcode of the fragmented message in progress, 0 if none
	try     bool          // reads do not wait: fill returns errWouldBlock instead
	rerr    error         // the error that ended reading: every later read returns it
	closeIn chan struct{} // closed when the server's close frame is read

	wmu       sync.Mutex // frames are written whole
	wbuf      []byte
	closeSent bool // under wmu
	closeOnce sync.Once
	closed    atomic.Bool // nc closed
}

// Close codes this side sends.
const (
	closeNormal        = 1000
	closeProtocolError = 1002
	closeInvalidData   = 1007
	closeTooBig        = 1009
	closeNoStatus      = 1005 // a close frame without a code; never sent
)

// errCloseSent is returned by writes after the close frame.
var errCloseSent = errors.New("websocket: the connection is closing")

const (
	readBufSize  = 8 << 10
	closeTimeout = time.Second // how long Close waits for the server's close frame
)

// dialConn connects to rawURL (ws://, wss://, http:// or https://) and makes the opening handshake. The HTTP
// client's transport, if it is an *http.Transport, provides the dialer and the TLS configuration.
func dialConn(ctx context.Context, rawURL string, hc *http.Client, header http.Header, limit int) (*conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	secure := false
	switch u.Scheme {
	case "ws", "http":
	case "wss", "https":
		secure = true
	default:
		return nil, fmt.Errorf("unsupported scheme %q (ws:// or wss://)", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[bool]string{false: "80", true: "443"}[secure])
	}
	dial := (&net.Dialer{}).DialContext
	var tlsConfig *tls.Config
	if hc != nil {
		if tr, ok := hc.Transport.(*http.Transport); ok {
			if tr.DialContext != nil {
				dial = tr.DialContext
			}
			tlsConfig = tr.TLSClientConfig
		}
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The context bounds the handshake: cancelling it closes the connection, which ends any read or write.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	c, err := handshake(ctx, nc, u, secure, tlsConfig, header)
	if !stop() || err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	c.limit = limit
	return c, nil
}

// handshake makes the TLS handshake if secure, then the WebSocket one, and returns the connection ready to use.
func handshake(ctx context.Context, nc net.Conn, u *url.URL, secure bool, tlsConfig *tls.Config,
	header http.Header) (*conn, error) {
	if secure {
		cfg := tlsConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"} // a WebSocket handshake is an HTTP/1.1 request
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		nc = tc
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	u2 := *u
	u2.Scheme = map[bool]string{false: "http", true: "https"}[secure]
	req := &http.Request{Method: http.MethodGet, URL: &u2, Host: u.Host, Header: http.Header{}, Proto: "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(nc); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, readBufSize)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("reading the handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		msg := strings.TrimSpace(string(body))
		if msg != "" {
			msg = ": " + msg
		}
		return nil, fmt.Errorf("the server answered %s instead of switching to WebSocket%s", resp.Status, msg)
	}
	if !rfc6455.HeaderHasToken(resp.Header, "Upgrade", "websocket") ||
		!rfc6455.HeaderHasToken(resp.Header, "Connection", "upgrade") {
		return nil, errors.New("the server's handshake response does not upgrade to websocket")
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != string(rfc6455.AppendAccept(nil, []byte(key))) {
		return nil, errors.New("the server's handshake response has a wrong Sec-WebSocket-Accept")
	}
	if resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		return nil, errors.New("the server chose a WebSocket extension that was not offered")
	}
	c := &conn{nc: nc, sock: socket(nc), buf: make([]byte, readBufSize), closeIn: make(chan struct{})}
	// The server may have sent its first frames in the same packets as the response.
	c.w, _ = br.Read(c.buf[:br.Buffered()])
	return c, nil
}

// watch closes the connection if ctx ends before the returned stop is called; stop reports whether it did not.
// A context that cannot end costs nothing.
func (c *conn) watch(ctx context.Context) func() bool {
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { c.closeNow() })
}

// ctxErr prefers the context's error to the one its cancellation caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// readMessage returns the next data message, answering pings and reassembling fragments on the way. Its bytes
// are valid until the next read. A close frame from the server is returned as a *CloseError, after it is
// answered.
func (c *conn) readMessage(ctx context.Context) (op byte, data []byte, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, nil, c.rerr
	}
	stop := c.watch(ctx)
	op, data, err = c.next()
	if !stop() {
		err = ctxErr(ctx, err)
	}
	if err != nil {
		c.rerr = err // frames still buffered are not read: the connection is gone
	}
	return op, data, err
}

// tryMessage is readMessage for event loops: it returns errWouldBlock at once if no whole message has
// arrived; what has is kept for the next call.
func (c *conn) tryMessage() (op byte, data []byte, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, nil, c.rerr
	}
	if _, ok := c.sock.(tryReader); !ok {
		return 0, nil, errors.New("reading without waiting needs a ws:// connection on Linux")
	}
	c.try = true
	op, data, err = c.next()
	c.try = false
	if err != nil && err != errWouldBlock {
		c.rerr = err
	}
	return op, data, err
}

// tryReader is a socket that can be read without waiting (socket_linux.go).
type tryReader interface {
	// tryRead reads what has arrived, or returns errWouldBlock.
	tryRead(p []byte) (int, error)
}

// errWouldBlock: nothing more has arrived yet.
var errWouldBlock = errors.New("websocket: no message has arrived")

// next reads frames until a whole data message is read; c.rmu is held. A read that returns errWouldBlock (c.try)
// leaves the frame it was reading unconsumed, and a fragmented message's first frames in c.msg, so that the next
// call goes on where it stopped.
func (c *conn) next() (byte, []byte, error) {
	for {
		fin, op, payload, err := c.frame()
		if err != nil {
			return 0, nil, err
		}
		switch op {
		case rfc6455.OpPing:
			// Once our close frame is sent no pong may follow it; the close handshake goes on.
			if err := c.writeFrame(rfc6455.OpPong, payload); err != nil && err != errCloseSent {
				return 0, nil, err
			}
			continue
		case rfc6455.OpPong:
			continue
		case rfc6455.OpClose:
			return 0, nil, c.closeFrame(payload)
		case rfc6455.OpText, rfc6455.OpBinary:
			if c.frag != 0 {
				return 0, nil, c.fail(closeProtocolError, "a new message began before the last one ended")
			}
			if fin {
				return c.check(op, payload)
			}
			c.frag, c.msg = op, c.msg[:0]
		case rfc6455.OpContinuation:
			if c.frag == 0 {
				return 0, nil, c.fail(closeProtocolError, "a continuation frame without a message")
			}
		default:
			return 0, nil, c.fail(closeProtocolError, fmt.Sprintf("unknown opcode %d", op))
		}
		if len(c.msg)+len(payload) > c.limit {
			return 0, nil, c.fail(closeTooBig, fmt.Sprintf("a message is larger than the limit of %d bytes", c.limit))
		}
		c.msg = append(c.msg, payload...)
		if fin {
			op := c.frag
			c.frag = 0
			return c.check(op, c.msg)
		}
	}
}

// check returns the message, or an error if it is text that is not UTF-8.
func (c *conn) check(op byte, data []byte) (byte, []byte, error) {
	if op == rfc6455.OpText && !utf8.Valid(data) {
		return 0, nil, c.fail(closeInvalidData, "a text message is not UTF-8")
	}
	return op, data, nil
}

// frame reads one frame and returns its payload, valid until the next frame is read.
func (c *conn) frame() (fin bool, op byte, payload []byte, err error) {
	if err := c.fill(2); err != nil {
		return false, 0, nil, err
	}
	b0, b1 := c.buf[c.r], c.buf[c.r+1]
	fin, op = b0&0x80 != 0, b0&0x0f
	if b0&0x70 != 0 {
		return false, 0, nil, c.fail(closeProtocolError, "reserved bits set without an extension")
	}
	if b1&0x80 != 0 {
		return false, 0, nil, c.fail(closeProtocolError, "a frame from the server is masked")
	}
	head, n := 2, int(b1&0x7f)
	switch n {
	case 126:
		head = 4
	case 127:
		head = 10
	}
	if op >= rfc6455.OpClose && (head > 2 || n > 125 || !fin) {
		return false, 0, nil, c.fail(closeProtocolError, "a control frame is fragmented or longer than 125 bytes")
	}
	if err := c.fill(head); err != nil {
		return false, 0, nil, err
	}
	switch head {
	case 4:
		n = int(binary.BigEndian.Uint16(c.buf[c.r+2:]))
	case 10:
		n64 := binary.BigEndian.Uint64(c.buf[c.r+2:])
		if n64 > uint64(c.limit) {
			return false, 0, nil, c.fail(closeTooBig, fmt.Sprintf("a message is larger than the limit of %d bytes", c.limit))
		}
		n = int(n64)
	}
	if op < rfc6455.OpClose && n > c.limit {
		return false, 0, nil, c.fail(closeTooBig, fmt.Sprintf("a message is larger than the limit of %d bytes", c.limit))
	}
	if err := c.fill(head + n); err != nil {
		return false, 0, nil, err
	}
	payload = c.buf[c.r+head : c.r+head+n]
	c.r += head + n
	return fin, op, payload, nil
}

// fill reads until c.buf holds n unconsumed bytes, moving them to the front or growing the buffer if they would
// not fit. A buffer grown for a large frame is given back once it is empty.
func (c *conn) fill(n int) error {
	if c.w-c.r >= n {
		return nil
	}
	if c.r == c.w && len(c.buf) > 4*readBufSize {
		c.buf, c.r, c.w = make([]byte, readBufSize), 0, 0
	}
	if c.r+n > len(c.buf) {
		if n > len(c.buf) {
			b := make([]byte, max(n, 2*len(c.buf)))
			copy(b, c.buf[c.r:c.w])
			c.buf = b
		} else {
			copy(c.buf, c.buf[c.r:c.w])
		}
		c.w -= c.r
		c.r = 0
	}
	for c.w-c.r < n {
		var m int
		var err error
		if c.try {
			m, err = c.sock.(tryReader).tryRead(c.buf[c.w:])
		} else {
			m, err = c.sock.Read(c.buf[c.w:])
		}
		c.w += m
		if err != nil {
			if c.w-c.r >= n {
				return nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// closeFrame answers the server's close frame and returns it as a *CloseError; the connection is then closed.
func (c *conn) closeFrame(payload []byte) error {
	ce := &CloseError{Code: closeNoStatus}
	if len(payload) >= 2 {
		ce.Code = int(binary.BigEndian.Uint16(payload))
		ce.Reason = string(payload[2:])
	}
	code := ce.Code
	if code == closeNoStatus {
		code = closeNormal
	}
	c.sendClose(code, "")
	close(c.closeIn)
	c.closeNow()
	return ce
}

// fail sends a close frame with code and reason, closes the connection and returns the error.
func (c *conn) fail(code int, reason string) error {
	c.sendClose(code, reason)
	c.closeNow()
	return fmt.Errorf("websocket: %s (closed with %d)", reason, code)
}

// write sends data as one text message.
func (c *conn) write(ctx context.Context, data []byte) error {
	stop := c.watch(ctx)
	err := c.writeFrame(rfc6455.OpText, data)
	if !stop() {
		err = ctxErr(ctx, err)
	}
	return err
}

// writeFrame sends one masked frame with one write call.
func (c *conn) writeFrame(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return errCloseSent
	}
	if op == rfc6455.OpClose {
		c.closeSent = true
	}
	b := append(c.wbuf[:0], 0x80|op)
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	// RFC 6455 wants an unpredictable key: math/rand/v2's global source is ChaCha8 seeded by the system's
	// entropy, one per thread, so it costs no lock and no state per connection.
	key := mrand.Uint32()
	b = binary.LittleEndian.AppendUint32(b, key)
	start := len(b)
	b = append(b, payload...)
	rfc6455.Mask(b[start:], key)
	if cap(b) <= 64<<10 {
		c.wbuf = b[:0]
	} else {
		c.wbuf = nil
	}
	_, err := c.sock.Write(b)
	return err
}

// sendClose sends a close frame, once; errors are ignored, as the connection is closing anyway.
func (c *conn) sendClose(code int, reason string) {
	p := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	c.writeFrame(rfc6455.OpClose, append(p, reason...))
}

// close makes the closing handshake: it sends a close frame with code, waits up to closeTimeout for the server's
// (reading it itself unless a read is in progress), then closes the connection.
func (c *conn) close(code int) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.sendClose(code, "")
	if c.rmu.TryLock() {
		c.nc.SetReadDeadline(time.Now().Add(closeTimeout))
		for {
			if _, _, err := c.next(); err != nil {
				break
			}
		}
		c.rmu.Unlock()
	} else {
		t := time.NewTimer(closeTimeout)
		select {
		case <-c.closeIn:
		case <-t.C:
		}
		t.Stop()
	}
	return c.closeNow()
}

// closeNow closes the connection without a closing handshake.
func (c *conn) closeNow() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		err = c.nc.Close()
	})
	return err
}
