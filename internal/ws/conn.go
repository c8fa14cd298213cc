// Package ws serves WebSocket connections (RFC 6455) with little memory for a connection that is doing nothing.
//
// Plain TCP connections are served by epoll loops: a loop accepts them and answers the handshake itself (Listen;
// requests it does not take go to net/http, where Upgrade can still take a connection over), no goroutine and no
// buffer is held for an idle connection, reads happen on a few loop goroutines, and a write goes straight to the
// socket from the goroutine that sends it. Other connections (TLS) get one reader goroutine, and a writer goroutine only while
// there is something to write. Either way a connection's messages are handed to its Handler one at a time, in
// order, and Send never blocks: a client that stops reading is disconnected when its queue is full.
package ws

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"tandem/internal/rfc6455"
)

// Handler receives the events of one connection. Its methods are called one at a time, from the connection's
// reading goroutine; a message passed to OnText is valid only until OnText returns.
type Handler interface {
	// OnText is called for each complete text message.
	OnText(msg []byte)
	// OnBinary is called for each complete binary message (tandem's protocol has none).
	OnBinary()
	// OnTooLarge is called when a message over the size limit starts; the connection is then closed with 1009.
	OnTooLarge(limit int)
	// OnClose is called once, last, when the connection is gone.
	OnClose()
}

// Close codes (RFC 6455, section 7.4.1).
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseNoStatus      = 1005
	CloseInvalidData   = 1007
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseInternal      = 1011
)

// Connection states.
const (
	stateOpen    = iota
	stateClosing // our close frame is queued or sent; waiting for the peer's
	stateClosed  // the socket is being torn down
	// stateHandshake: an epoll loop is reading the request (see Server.Listen); nothing may be sent yet.
	stateHandshake
)

// Conn is one WebSocket connection.
type Conn struct {
	srv *Server
	h   Handler

	// Transport: an epoll-driven socket (fd >= 0) or a net.Conn with its own goroutines.
	fd   int
	p    *poller
	nc   net.Conn
	door *door // while the loop reads the request: the listener it came through

	mu        sync.Mutex
	state     uint8
	writing   bool // net.Conn mode: a writer goroutine is running
	wantWrite bool // epoll mode: EPOLLOUT is registered
	// inLoop: epoll mode, c is in its loop's set, so the loop tears it down once it is aborted (see abortLocked).
	inLoop   bool
	loggedIn bool   // LoggedIn was called
	out      []byte // bytes queued for the socket
	counted  int    // len(out) as counted in the server's total of queued bytes
	since    int64  // when the handshake, the connection, the close or the abort began (unix nanoseconds)

	lastRead atomic.Int64 // unix nanoseconds of the last bytes from the peer
	lastPing atomic.Int64 // unix nanoseconds of the last ping sent
	// msgStart: unix nanoseconds when the oldest message or frame not yet whole began to arrive; 0 for none.
	msgStart atomic.Int64

	// Guarded by srv.mu: how c is counted against the caps on connections (see admitLocked).
	acct uint8
	addr *addrCount // its client address's counts; nil when exempt
	ip   netip.Addr // the client's address (RemoteIP); set once, before the handler is made

	// Read side, owned by the reading goroutine.
	in       []byte // bytes of a frame not complete yet
	frag     []byte // a fragmented text message being put together
	fragOp   byte   // opcode of the fragmented message, 0 when none
	fragSize int    // bytes of the fragmented message so far (binary ones are not kept)
	held     int    // cap(in)+cap(frag) as counted in the server's total of bytes held (see account)
	skip     uint64 // bytes of an oversized or refused frame still to be thrown away (a length may be up to 2^63-1)
	ignore   bool   // closing after a client error: data frames are dropped, a close frame is still answered
	discard  bool   // the framing was lost: everything the peer sends is dropped until it hangs up
	peerGone bool   // epoll mode: the loop saw the peer close or reset its end (EPOLLRDHUP, EPOLLHUP, EPOLLERR)
	// closeAfterFlush: the peer's close frame was answered; drop the connection once the answer is written.
	closeAfterFlush bool
	// paused: the Handler asked that no more messages be read for now (PauseReading); what was read already
	// waits in c.in. Set and cleared on the reading goroutine only.
	paused bool
	// resumeOnEnter: ResumeReading came while the connection was not yet in its loop (guarded by mu).
	resumeOnEnter bool
	resumed       chan struct{} // net.Conn mode: ResumeReading's signal to the waiting reader
}

var errClosed = errors.New("ws: connection closed")

// PauseReading stops the reading of c's messages after the one being handled: the Handler gets no more until
// ResumeReading is called. It is for a Handler that must wait on something slow (a round trip to another
// server) without holding up the other connections its reader serves, and without letting c's next messages
// overtake the one it waits on. It must be called from within one of the Handler's methods. Keepalive, queued
// writes and closing go on as usual.
func (c *Conn) PauseReading() { c.paused = true }

// ResumeReading undoes PauseReading: the messages already read are handed to the Handler, in order, and reading
// goes on, on c's reading goroutine. It may be called from any goroutine, and on a connection that is gone.
func (c *Conn) ResumeReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.fd >= 0 && c.inLoop:
		c.p.resume(c)
	case c.fd >= 0:
		c.resumeOnEnter = true // Upgrade is still reading it: enterLoop hands it over
	default:
		select {
		case c.resumed <- struct{}{}:
		default:
		}
	}
}

// Send queues msg as one text message. It never blocks, and reports whether the message was taken: false when
// the connection is closing or closed, or when its queue overflowed (then the connection is dropped). msg may be
// reused as soon as Send returns.
func (c *Conn) Send(msg []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	return c.writeFrameLocked(rfc6455.OpText, msg)
}

// Close starts the closing handshake with code and reason; the connection goes away when the peer answers, or
// after the server's close timeout. It is safe to call more than once and from any goroutine.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
}

func (c *Conn) closeLocked(code int, reason string) {
	if c.state == stateHandshake {
		c.abortLocked()
		return
	}
	if c.state != stateOpen {
		return
	}
	var payload [125]byte
	if !c.writeFrameLocked(rfc6455.OpClose, closePayload(payload[:0], code, reason)) {
		return
	}
	c.state = stateClosing
	c.since = time.Now().UnixNano()
	c.closeWriteIfFlushedLocked()
}

// closePayload appends a close frame's payload, code and reason (cut to fit 125 bytes), to b.
func closePayload(b []byte, code int, reason string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, truncateUTF8(reason, 123)...)
}

// closeFrame is a whole close frame, as the server sends it (unmasked).
func closeFrame(code int, reason string) []byte {
	p := closePayload(nil, code, reason)
	return append([]byte{0x80 | rfc6455.OpClose, byte(len(p))}, p...)
}

// writeFrameLocked writes or queues one frame. On overflow or a write error it aborts the connection and
// returns false.
func (c *Conn) writeFrameLocked(op byte, payload []byte) bool {
	var hdr [10]byte
	hdr[0] = 0x80 | op
	n := 2
	switch l := len(payload); {
	case l < 126:
		hdr[1] = byte(l)
	case l < 1<<16:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(l))
		n = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(l))
		n = 10
	}
	return c.writeLocked(hdr[:n], payload, op == rfc6455.OpClose)
}

// writeLocked writes or queues a and then b; must is set for bytes that are queued even over the limits (a close
// frame, the handshake's answer). On overflow or a write error it aborts the connection and returns false.
func (c *Conn) writeLocked(a, b []byte, must bool) bool {
	if c.fd >= 0 && len(c.out) == 0 {
		written, err := writev(c.fd, a, b)
		if err != nil {
			c.abortLocked()
			return false
		}
		if written == len(a)+len(b) {
			return true
		}
		// The socket is full: keep the rest and wait for EPOLLOUT.
		if written < len(a) {
			c.out = append(c.out, a[written:]...)
			c.out = append(c.out, b...)
		} else {
			c.out = append(c.out, b[written-len(a):]...)
		}
		c.count()
		c.p.watchWrite(c, true)
		c.wantWrite = true
		return true
	}
	more := len(a) + len(b)
	if !must && (len(c.out)+more > c.srv.cfg.SendQueue || c.srv.queued.Load()+int64(more) > int64(c.srv.cfg.TotalQueue)) {
		c.srv.slowDrops.Add(1)
		c.abortLocked()
		return false
	}
	c.out = append(c.out, a...)
	c.out = append(c.out, b...)
	c.count()
	if c.nc != nil && !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return true
}

// count brings the server's total of queued bytes up to date with c.out; c.mu is held.
func (c *Conn) count() {
	if d := len(c.out) - c.counted; d != 0 {
		c.srv.queued.Add(int64(d))
		c.counted = len(c.out)
	}
}

// abortLocked drops the connection without a closing handshake; the reading goroutine then tears it down. It may
// be called from any goroutine, and on a socket that has failed already (a write met a reset).
//
// In net.Conn mode closing the connection ends the reader's Read, which tears it down. In epoll mode shutdown()
// alone is not enough: on a socket that was reset it raises no event, and the event of the reset itself may have
// been taken already by a read that found data before it (the events are edge-triggered), so the connection is
// also handed to its loop to be torn down there.
func (c *Conn) abortLocked() {
	if c.state == stateClosed {
		return
	}
	c.state = stateClosed
	c.since = time.Now().UnixNano()
	c.out = nil
	c.count()
	switch {
	case c.fd >= 0:
		shutdown(c.fd)
		if c.inLoop {
			c.p.reap(c)
		}
	case c.nc != nil:
		closeNow(c.nc)
	}
}

// closeNow closes nc at once. A TLS connection's own Close first writes its closing alert, which can block for
// seconds on a client that does not read (with c.mu held, when aborting); closing the connection beneath it ends
// its reads and writes just the same.
func closeNow(nc net.Conn) {
	if t, ok := nc.(interface{ NetConn() net.Conn }); ok {
		_ = t.NetConn().Close()
		return
	}
	_ = nc.Close()
}

// closeWriteIfFlushedLocked half-closes a closing connection once everything queued is on the wire, so the peer
// sees our close frame and then the end of the stream.
func (c *Conn) closeWriteIfFlushedLocked() {
	if c.state != stateClosing || len(c.out) > 0 {
		return
	}
	if c.fd >= 0 {
		shutdownWrite(c.fd)
		return
	}
	// net.Conn mode: wait for the peer's close frame at most the close timeout.
	_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.cfg.CloseTimeout))
}

// writeLoop drains the queue of a net.Conn-mode connection and exits when it is empty.
func (c *Conn) writeLoop() {
	for {
		c.mu.Lock()
		if len(c.out) == 0 || c.state == stateClosed {
			c.writing = false
			if c.closeAfterFlush {
				c.abortLocked()
			}
			c.closeWriteIfFlushedLocked()
			c.mu.Unlock()
			return
		}
		buf := c.out
		c.out = nil
		c.count()
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		if _, err := c.nc.Write(buf); err != nil {
			c.mu.Lock()
			c.writing = false
			c.abortLocked()
			c.mu.Unlock()
			return
		}
	}
}

// flush writes queued bytes after EPOLLOUT said the socket has room (epoll mode).
func (c *Conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.count()
	if c.state == stateClosed {
		return
	}
	for len(c.out) > 0 {
		n, err := write(c.fd, c.out)
		if err == errAgain {
			return
		}
		if err != nil {
			c.abortLocked()
			return
		}
		c.out = c.out[n:]
	}
	c.out = nil
	if c.wantWrite {
		c.p.watchWrite(c, false)
		c.wantWrite = false
	}
	if c.closeAfterFlush {
		c.abortLocked()
		return
	}
	c.closeWriteIfFlushedLocked()
}

// onData parses the bytes read from the peer. It reports false when the connection must be torn down.
func (c *Conn) onData(data []byte) bool {
	if c.door != nil {
		ok := c.onRequest(data)
		return c.account() && ok
	}
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	ok, fresh := c.parse(data)
	// The time a message may take to arrive whole runs from the start of a fragmented message (set in frame), or
	// else from the first bytes of the frame not yet whole.
	switch {
	case c.fragOp != 0:
	case len(c.in) > 0:
		if fresh || c.msgStart.Load() == 0 {
			c.msgStart.Store(now)
		}
	default:
		if c.msgStart.Load() != 0 {
			c.msgStart.Store(0)
		}
	}
	if !c.account() {
		c.fail(CloseTryAgainLater, "the server is too busy; try again later")
	}
	return ok
}

// parse reads the frames in data, keeping a frame not yet whole in c.in. fresh reports whether the frame kept
// began in data (rather than earlier).
func (c *Conn) parse(data []byte) (ok, fresh bool) {
	if c.discard {
		c.in = nil
		return true, false
	}
	if c.skip > 0 {
		n := min(c.skip, uint64(len(data)))
		c.skip -= n
		data = data[n:]
	}
	fresh = len(c.in) == 0
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	for len(data) > 0 {
		n, ok := c.frame(data)
		if !ok || c.discard {
			c.in = nil
			return ok, false
		}
		if n == 0 {
			break
		}
		fresh = true
		data = data[n:]
		if c.paused {
			break // the rest waits in c.in for ResumeReading
		}
	}
	switch {
	case len(data) == 0:
		c.in = nil
	case len(c.in) > 0 && &data[0] == &c.in[len(c.in)-len(data)]:
		// Keep the tail of c.in, moved to the front when that frees most of it.
		if len(data) < cap(c.in)/2 {
			c.in = append(make([]byte, 0, len(data)), data...)
		} else {
			c.in = c.in[:copy(c.in, data)]
		}
	default:
		c.in = append(make([]byte, 0, len(data)), data...)
	}
	return true, fresh
}

// frame handles the first frame in data. It returns the bytes consumed (0 when the frame is not complete yet)
// and false when the connection must be torn down.
func (c *Conn) frame(data []byte) (int, bool) {
	if len(data) < 2 {
		return 0, true
	}
	b0, b1 := data[0], data[1]
	fin, op := b0&0x80 != 0, b0&0x0f
	masked := b1&0x80 != 0
	hlen, length := 2, uint64(b1&0x7f)
	switch length {
	case 126:
		if len(data) < 4 {
			return 0, true
		}
		hlen, length = 4, uint64(binary.BigEndian.Uint16(data[2:]))
	case 127:
		if len(data) < 10 {
			return 0, true
		}
		hlen, length = 10, binary.BigEndian.Uint64(data[2:])
		if length>>63 != 0 {
			return 0, c.fail(CloseProtocolError, "invalid frame length")
		}
	}
	total := uint64(hlen) + length
	if masked {
		total += 4
	}
	control := op&0x8 != 0
	switch {
	case b0&0x70 != 0:
		return c.reject(data, total, CloseProtocolError, "reserved bits set (no extension was negotiated)")
	case !masked:
		return c.reject(data, total, CloseProtocolError, "client frames must be masked")
	}
	if control {
		if op != rfc6455.OpClose && op != rfc6455.OpPing && op != rfc6455.OpPong {
			return c.reject(data, total, CloseProtocolError, "unknown opcode")
		}
		if !fin || length > 125 {
			return c.reject(data, total, CloseProtocolError, "control frames must be whole and at most 125 bytes")
		}
	} else if c.ignore {
		return c.skipFrame(data, total)
	} else {
		switch {
		case op != rfc6455.OpContinuation && op != rfc6455.OpText && op != rfc6455.OpBinary:
			return c.reject(data, total, CloseProtocolError, "unknown opcode")
		case op == rfc6455.OpContinuation && c.fragOp == 0:
			return c.reject(data, total, CloseProtocolError, "continuation frame without a message to continue")
		case op != rfc6455.OpContinuation && c.fragOp != 0:
			return c.reject(data, total, CloseProtocolError, "new message before the previous one ended")
		}
		limit := uint64(c.srv.cfg.MaxMessage)
		if length > limit || uint64(c.fragSize)+length > limit {
			c.h.OnTooLarge(c.srv.cfg.MaxMessage)
			return c.reject(data, total, CloseTooBig, "message too large")
		}
	}
	if uint64(len(data)) < total {
		return 0, true
	}
	payload := data[hlen+4 : int(total)]
	rfc6455.Mask(payload, binary.LittleEndian.Uint32(data[hlen:]))

	switch op {
	case rfc6455.OpPing:
		c.pong(payload)
	case rfc6455.OpPong:
	case rfc6455.OpClose:
		return int(total), c.onCloseFrame(payload)
	case rfc6455.OpText, rfc6455.OpBinary:
		if fin {
			c.deliver(op, payload)
			break
		}
		c.fragOp, c.fragSize = op, len(payload)
		c.msgStart.Store(c.lastRead.Load())
		if op == rfc6455.OpText {
			c.frag = append(c.frag[:0], payload...)
		}
	case rfc6455.OpContinuation:
		c.fragSize += len(payload)
		if c.fragOp == rfc6455.OpText {
			c.frag = append(c.frag, payload...)
		}
		if fin {
			op, msg := c.fragOp, c.frag
			c.fragOp, c.frag, c.fragSize = 0, nil, 0
			c.deliver(op, msg)
		}
	}
	return int(total), true
}

// pong answers a ping.
func (c *Conn) pong(payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateOpen {
		c.writeFrameLocked(rfc6455.OpPong, payload)
	}
}

// reject starts closing the connection for a frame it will not take, and throws that frame away as it arrives,
// so that frames after it, the peer's close among them, are still read.
func (c *Conn) reject(data []byte, total uint64, code int, reason string) (int, bool) {
	c.closeForError(code, reason)
	return c.skipFrame(data, total)
}

// skipFrame throws away a frame of total bytes that starts data, now or as the rest of it arrives.
func (c *Conn) skipFrame(data []byte, total uint64) (int, bool) {
	if uint64(len(data)) >= total {
		return int(total), true
	}
	c.skip = total - uint64(len(data)) // 2^63 or more when a 2^63-1 length came with only its header
	return len(data), true
}

func (c *Conn) deliver(op byte, msg []byte) {
	switch {
	case op == rfc6455.OpBinary:
		c.h.OnBinary()
	case !utf8.Valid(msg):
		c.closeForError(CloseInvalidData, "text message is not valid UTF-8")
	default:
		c.h.OnText(msg)
	}
}

// onCloseFrame answers the peer's close frame. It reports false when the connection can be torn down at once;
// otherwise the answer is still queued, and the connection is dropped as soon as it is written.
func (c *Conn) onCloseFrame(payload []byte) bool {
	c.ignore = true
	code, reason := CloseNoStatus, []byte(nil)
	if len(payload) >= 2 {
		code, reason = int(binary.BigEndian.Uint16(payload)), payload[2:]
	}
	switch {
	case len(payload) == 1, len(payload) >= 2 && !validCloseCode(code), !utf8.Valid(reason):
		code = CloseProtocolError
	case code == CloseNoStatus:
		code = CloseNormal
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateOpen {
		var echo [2]byte
		binary.BigEndian.PutUint16(echo[:], uint16(code))
		c.writeFrameLocked(rfc6455.OpClose, echo[:])
		c.state = stateClosing
		c.since = time.Now().UnixNano()
	}
	if c.state == stateClosed || (len(c.out) == 0 && !c.writing) {
		return false
	}
	c.closeAfterFlush = true
	return true
}

// closeForError starts closing the connection for a client error whose frame could still be read whole: data
// that follows is ignored, and the peer's close frame is answered.
func (c *Conn) closeForError(code int, reason string) {
	c.ignore = true
	c.frag, c.fragOp, c.fragSize = nil, 0, 0
	c.Close(code, reason)
}

// fail starts closing the connection for a protocol error after which frames can no longer be told apart:
// everything the peer sends from then on is dropped, until it hangs up or the close timeout passes.
func (c *Conn) fail(code int, reason string) bool {
	c.discard = true
	c.closeForError(code, reason)
	return true
}

func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func truncateUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}

// handshaking is the Handler of a connection whose request is still being read: it has nothing to be told.
type handshaking struct{}

func (handshaking) OnText([]byte)  {}
func (handshaking) OnBinary()      {}
func (handshaking) OnTooLarge(int) {}
func (handshaking) OnClose()       {}
