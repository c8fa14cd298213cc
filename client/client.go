package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"tandem/internal/rfc6455"
	"tandem/protocol"
)

// Options configures a connection. The zero value (or a nil *Options) is ready to use.
type Options struct {
	// HTTPClient's Transport, if it is an *http.Transport, gives the connection its DialContext (to reach a
	// server through something other than a plain TCP dial) and its TLSClientConfig (to trust a private CA for
	// wss://). The client makes the handshake itself; nothing else of the HTTP client is used (no proxy).
	HTTPClient *http.Client

	// Header is sent with the handshake request (an Origin, a User-Agent...). If nil, none is added.
	Header http.Header

	// ReadLimit is the largest message accepted from the server, in bytes. If zero, 1 MiB.
	// A larger message fails Read and closes the connection with 1009.
	ReadLimit int64

	// Tutorial makes the client send messages exactly as the tutorial's browser client does: the payload before
	// name, as its send() appends name last, and nothing tandem added (no resume token in login, no reason in
	// leave). Use it to test compatibility, or to measure a server that speaks only the tutorial's protocol. The
	// users request is tandem's own and is sent as usual.
	Tutorial bool
}

// Client is one connection to a tandem server.
//
// The send methods (Login excepted) may be called from any goroutine, also while another goroutine reads. Reading
// (Read, ReadRaw, Login, WaitFor) must be done from one goroutine at a time: the caller owns the read loop, and
// the client starts no goroutine of its own. Keep reading while the connection is open: the WebSocket pings of
// the server are answered while a read is in progress.
type Client struct {
	ws       *conn
	tutorial bool
	closed   atomic.Bool

	wmu  sync.Mutex // serializes encoding into wbuf and writing it
	wbuf []byte

	queued []*Message // messages read by WaitFor that were not the one waited for, returned first by Read
}

// Dial connects to a tandem server at url (ws://host:9090/ or wss://host:9090/). It does not log in.
// ctx bounds the handshake only.
func Dial(ctx context.Context, url string, opts *Options) (*Client, error) {
	if opts == nil {
		opts = &Options{}
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 1 << 20
	}
	ws, err := dialConn(ctx, url, opts.HTTPClient, opts.Header, int(min(limit, 1<<30)))
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	return &Client{ws: ws, tutorial: opts.Tutorial}, nil
}

// Close closes the connection with the normal close code and waits briefly for the server's answer. It is safe to
// call more than once and from any goroutine; a read in progress returns an error.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	err := c.ws.close(closeNormal)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("client: close: %w", err)
	}
	return nil
}

// CloseNow closes the connection at once, without the close handshake.
func (c *Client) CloseNow() error {
	c.closed.Store(true)
	if err := c.ws.closeNow(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// ReadRaw reads the next frame and returns its bytes, which are valid until the next read. It is the lean path
// for callers that decode (or not) themselves; Decode turns the bytes into a Message.
// Messages queued by WaitFor are not returned by ReadRaw; use Read after WaitFor.
func (c *Client) ReadRaw(ctx context.Context) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	for {
		op, data, err := c.ws.readMessage(ctx)
		if err != nil {
			if c.closed.Load() {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("client: read: %w", err)
		}
		if op != rfc6455.OpText {
			continue // tandem sends text only; skip anything else
		}
		return data, nil
	}
}

// TryReadRaw is ReadRaw for an event loop that waits for many connections at once (see SyscallConn): it
// returns the next message if it has arrived, and ok false at once if it has not. Call it until ok is false
// before waiting for the socket again: messages that arrived together are returned one by one. Pings are
// answered and fragments gathered as by ReadRaw; a message that has arrived in part is kept for the next call.
// It needs a ws:// connection on Linux.
func (c *Client) TryReadRaw() (data []byte, ok bool, err error) {
	if c.closed.Load() {
		return nil, false, ErrClosed
	}
	for {
		op, data, err := c.ws.tryMessage()
		switch {
		case err == errWouldBlock:
			return nil, false, nil
		case err != nil && c.closed.Load():
			return nil, false, ErrClosed
		case err != nil:
			return nil, false, fmt.Errorf("client: read: %w", err)
		case op == rfc6455.OpText:
			return data, true, nil
		}
	}
}

// SyscallConn returns the connection's socket for an event loop to wait on (with epoll, say), for a ws://
// connection; reading it is TryReadRaw's job.
func (c *Client) SyscallConn() (syscall.RawConn, error) {
	tc, ok := c.ws.nc.(*net.TCPConn)
	if !ok {
		return nil, errors.New("client: not a plain TCP connection")
	}
	return tc.SyscallConn()
}

// Read reads and decodes the next message. A frame that cannot be decoded returns a *DecodeError, after which
// Read may be called again; any other error means the connection is gone.
// Errors sent by the server are returned as messages of type error (see Message.Err), not as errors.
func (c *Client) Read(ctx context.Context) (*Message, error) {
	if len(c.queued) > 0 {
		m := c.queued[0]
		c.queued[0] = nil
		c.queued = c.queued[1:]
		if len(c.queued) == 0 {
			c.queued = nil
		}
		return m, nil
	}
	data, err := c.ReadRaw(ctx)
	if err != nil {
		return nil, err
	}
	m := new(Message)
	if err := Decode(data, m); err != nil {
		return nil, err
	}
	return m, nil
}

// WaitFor reads until a message of type typ arrives, or an error for a request of type typ, and returns it.
// Other messages read meanwhile are kept, up to 1,000, and returned by the next calls to Read. Frames that cannot
// be decoded are skipped. An error message for typ is returned as the message, with a nil error.
func (c *Client) WaitFor(ctx context.Context, typ string) (*Message, error) {
	for {
		data, err := c.ReadRaw(ctx)
		if err != nil {
			return nil, err
		}
		m := new(Message)
		if Decode(data, m) != nil {
			continue
		}
		if m.Type == typ || (m.Type == protocol.TypeError && (m.Request == typ || m.Request == "")) {
			return m, nil
		}
		if len(c.queued) >= 1000 {
			return nil, fmt.Errorf("client: waiting for %s: more than 1000 other messages came first", typ)
		}
		c.queued = append(c.queued, m)
	}
}

// Login logs in as name, with the resume token from an earlier login reply if token is not empty, and waits for
// the reply, which it returns. A refusal is returned as an *Error (errors.Is(err, ErrNameTaken) and so on) along
// with the reply. Login reads from the connection: do not call it while another goroutine reads.
func (c *Client) Login(ctx context.Context, name, token string) (*Message, error) {
	if err := c.SendLogin(ctx, name, token); err != nil {
		return nil, err
	}
	m, err := c.WaitFor(ctx, protocol.TypeLogin)
	if err != nil {
		return nil, err
	}
	if err := m.Err(); err != nil {
		return m, fmt.Errorf("client: login as %q: %w", name, err)
	}
	return m, nil
}

// SendLogin sends a login request, with the resume token if it is not empty (and not in tutorial mode), without
// waiting for the reply.
func (c *Client) SendLogin(ctx context.Context, name, token string) error {
	return c.SendLoginWith(ctx, name, token, Credentials{})
}

// Credentials are what a login carries to a server that checks who logs in (docs/access.md); the empty ones are
// left out.
type Credentials struct {
	Password string // the server's password (password mode) or the account's (accounts mode)
	Invite   string // the secret of an invite link (what follows #invite= in the link)
	JWT      string // a token from the operator's app (jwt mode)
	Device   string // the device credential of an earlier login reply (Message.Device)
}

// LoginWith is Login with credentials. name may be empty when the credential fixes the name (a token, an
// invite for a given name, a device credential of an account); it is then left out of the request.
func (c *Client) LoginWith(ctx context.Context, name, token string, cred Credentials) (*Message, error) {
	if err := c.SendLoginWith(ctx, name, token, cred); err != nil {
		return nil, err
	}
	m, err := c.WaitFor(ctx, protocol.TypeLogin)
	if err != nil {
		return nil, err
	}
	if err := m.Err(); err != nil {
		return m, fmt.Errorf("client: login as %q: %w", name, err)
	}
	return m, nil
}

// SendLoginWith is SendLogin with credentials, without waiting for the reply.
func (c *Client) SendLoginWith(ctx context.Context, name, token string, cred Credentials) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], `{"type":"login"`...)
	if name != "" || (cred == Credentials{}) {
		b = appendString(b, "name", name)
	}
	if token != "" && !c.tutorial {
		b = appendString(b, "token", token)
	}
	for _, f := range [...]struct{ key, value string }{
		{"password", cred.Password}, {"invite", cred.Invite}, {"jwt", cred.JWT}, {"device", cred.Device},
	} {
		if f.value != "" {
			b = appendString(b, f.key, f.value)
		}
	}
	return c.write(ctx, b)
}

// SendOffer sends an offer (an RTCSessionDescription as JSON: {"type":"offer","sdp":"..."}) to the user to.
func (c *Client) SendOffer(ctx context.Context, to string, offer json.RawMessage) error {
	return c.sendPayload(ctx, protocol.TypeOffer, to, offer)
}

// SendAnswer sends an answer (an RTCSessionDescription as JSON) to the user to, the caller.
func (c *Client) SendAnswer(ctx context.Context, to string, answer json.RawMessage) error {
	return c.sendPayload(ctx, protocol.TypeAnswer, to, answer)
}

// SendCandidate sends an ICE candidate (an RTCIceCandidateInit as JSON) to the user to. A nil or empty candidate
// is sent as null, which means the end of candidates.
func (c *Client) SendCandidate(ctx context.Context, to string, candidate json.RawMessage) error {
	return c.sendPayload(ctx, protocol.TypeCandidate, to, candidate)
}

func (c *Client) sendPayload(ctx context.Context, typ, to string, payload json.RawMessage) error {
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], `{"type":"`...)
	b = append(b, typ...)
	b = append(b, '"')
	if c.tutorial {
		b = appendString(append(appendKey(b, typ), payload...), "name", to)
	} else {
		b = append(appendKey(appendString(b, "name", to), typ), payload...)
	}
	return c.write(ctx, b)
}

// appendKey appends the start of a member, ,"key": .
func appendKey(b []byte, key string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

// appendString appends a member whose value is the string value.
func appendString(b []byte, key, value string) []byte {
	return protocol.AppendString(appendKey(b, key), value)
}

// SendLeave ends the call with the user to, for reason (protocol.ReasonHangup, ReasonDeclined, ReasonNoAnswer,
// ReasonCancelled; empty for the default, hangup). An empty to means the current peer. In tutorial mode the
// reason is not sent.
func (c *Client) SendLeave(ctx context.Context, to, reason string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], `{"type":"leave"`...)
	if to != "" {
		b = appendString(b, "name", to)
	}
	if reason != "" && !c.tutorial {
		b = appendString(b, "reason", reason)
	}
	return c.write(ctx, b)
}

// SendUsers asks for the list of online users whose name starts with query (empty: everybody), at most limit
// of them (0: the server's default). The reply is a message of type users.
func (c *Client) SendUsers(ctx context.Context, query string, limit int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], `{"type":"users"`...)
	if query != "" {
		b = appendString(b, "query", query)
	}
	if limit > 0 {
		b = strconv.AppendInt(appendKey(b, "limit"), int64(limit), 10)
	}
	return c.write(ctx, b)
}

// WatchUsers asks for the list as SendUsers does, and to be kept up to date: when the page changes (a user logs
// in or leaves, a call starts or ends), the server pushes it again (a users message with Update set). The reply
// says whether the server took the watch (Watching). A later SendUsers, or another WatchUsers, replaces it.
func (c *Client) WatchUsers(ctx context.Context, query string, limit int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], `{"type":"users","watch":true`...)
	if query != "" {
		b = appendString(b, "query", query)
	}
	if limit > 0 {
		b = strconv.AppendInt(appendKey(b, "limit"), int64(limit), 10)
	}
	return c.write(ctx, b)
}

// Send sends v, encoded with encoding/json, as one message: for messages this package has no method for, and for
// tests that send malformed ones. A []byte or json.RawMessage is sent as it is.
func (c *Client) Send(ctx context.Context, v any) error {
	var data []byte
	switch v := v.(type) {
	case []byte:
		data = v
	case json.RawMessage:
		data = v
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			return fmt.Errorf("client: send: %w", err)
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrame(ctx, data)
}

// write closes the object whose members b, encoded into the write buffer, holds and sends it as one text frame;
// c.wmu is held. b becomes the new write buffer.
func (c *Client) write(ctx context.Context, b []byte) error {
	b = append(b, '}')
	if cap(b) <= 64<<10 {
		c.wbuf = b[:0]
	} else {
		c.wbuf = nil
	}
	return c.writeFrame(ctx, b)
}

// writeFrame sends b as one text frame; c.wmu is held.
func (c *Client) writeFrame(ctx context.Context, b []byte) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if err := c.ws.write(ctx, b); err != nil {
		if c.closed.Load() {
			return ErrClosed
		}
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}

var _ io.Closer = (*Client)(nil)
