// Package turnclient is a small TURN client (RFC 8656) over UDP or TCP that speaks the wire format directly: it
// allocates, creates permissions, binds channels, refreshes, and sends and receives ChannelData frames with no
// allocation per packet. It is what tandem's TURN tests use when they need to control every byte (frames the
// server must refuse, channels bound by number, expired bindings), and what the TURN load generator relays with.
//
// A Client is used by one goroutine at a time. Its request methods wait for their response and drop whatever
// else arrives meanwhile, so relay data only once the setup requests are done.
package turnclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// ChannelData frame layout (RFC 8656, section 12.4).
const (
	// HeaderSize is the size of a ChannelData header: the channel number and the length of the data.
	HeaderSize = 4
	// MinChannel and MaxChannel bound the channel numbers a client may bind.
	MinChannel = 0x4000
	MaxChannel = 0x4FFF
)

const (
	protoUDP     = 17
	maxFrameSize = 64 << 10
	retries      = 4
)

// ErrTimeout is returned when the server did not answer a request in time.
var ErrTimeout = errors.New("turnclient: no response from the server")

// Client is one TURN client transport: a UDP socket or a TCP connection to the server.
type Client struct {
	network            string
	conn               net.Conn
	rd                 *bufio.Reader // TCP only
	username, password string
	realm, nonce       string
	rto                time.Duration

	wbuf []byte // the frame being written
	rbuf []byte // the datagram or frame last read
}

// Options are the optional settings of Dial.
type Options struct {
	// LocalAddr is the address to send from (its port 0 picks one). Invalid means any.
	LocalAddr netip.AddrPort
	// RTO is how long a request waits for its response before it is sent again (UDP) or fails (TCP); zero means
	// 250 ms.
	RTO time.Duration
	// TLS is the client's TLS configuration over "tls" (TURN over TLS, RFC 7065). Nil means the defaults, which
	// check the server's certificate against the system's roots.
	TLS *tls.Config
}

// Dial connects to the TURN server at server over network ("udp", "tcp", or "tls": TCP with TLS, the handshake
// done before Dial returns) with the long-term credential username and password.
func Dial(network string, server netip.AddrPort, username, password string, opts *Options) (*Client, error) {
	if opts == nil {
		opts = &Options{}
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	if opts.LocalAddr.IsValid() {
		switch network {
		case "udp":
			d.LocalAddr = net.UDPAddrFromAddrPort(opts.LocalAddr)
		case "tcp", "tls":
			d.LocalAddr = net.TCPAddrFromAddrPort(opts.LocalAddr)
		}
	}
	if network != "udp" && network != "tcp" && network != "tls" {
		return nil, fmt.Errorf("turnclient: network %q: want udp, tcp or tls", network)
	}
	var (
		conn net.Conn
		err  error
	)
	if network == "tls" {
		td := tls.Dialer{NetDialer: &d, Config: opts.TLS}
		conn, err = td.Dial("tcp", server.String())
		network = "tcp" // the same framing inside
	} else {
		conn, err = d.Dial(network, server.String())
	}
	if err != nil {
		return nil, fmt.Errorf("turnclient: %w", err)
	}
	c := &Client{
		network: network, conn: conn, username: username, password: password, rto: opts.RTO,
		wbuf: make([]byte, 0, 2048), rbuf: make([]byte, maxFrameSize),
	}
	if c.rto == 0 {
		c.rto = 250 * time.Millisecond
	}
	if network == "tcp" {
		c.rd = bufio.NewReaderSize(conn, 64<<10)
	}
	return c, nil
}

// Close closes the client's socket or connection; the server keeps the allocation until it expires (UDP) or
// deletes it at once (TCP).
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the client's socket or connection to the server.
func (c *Client) Conn() net.Conn { return c.conn }

// LocalAddr is the client's transport address as the server sees it on loopback.
func (c *Client) LocalAddr() netip.AddrPort {
	switch a := c.conn.LocalAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Error is an error response from the server.
type Error struct {
	Method stun.Method
	Code   stun.ErrorCode
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("turnclient: %v: error %d %s", e.Method, e.Code, e.Reason)
}

// Allocate asks for a UDP relay and returns its address.
func (c *Client) Allocate() (netip.AddrPort, error) {
	m, err := c.do(stun.MethodAllocate, stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{protoUDP, 0, 0, 0}})
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relay stun.XORMappedAddress
	if err := relay.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, fmt.Errorf("turnclient: Allocate response: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relay.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relay.Port)), nil
}

// Refresh refreshes the allocation for lifetime; zero deletes it.
func (c *Client) Refresh(lifetime time.Duration) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(lifetime/time.Second))
	_, err := c.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: v})
	return err
}

// CreatePermission installs or refreshes permissions for the IP addresses of peers.
func (c *Client) CreatePermission(peers ...netip.AddrPort) error {
	setters := make([]stun.Setter, 0, len(peers))
	for _, p := range peers {
		setters = append(setters, peerAddr(p))
	}
	_, err := c.do(stun.MethodCreatePermission, setters...)
	return err
}

// BindChannel binds (or refreshes) channel number to peer.
func (c *Client) BindChannel(number uint16, peer netip.AddrPort) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint16(v, number)
	_, err := c.do(stun.MethodChannelBind, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: v}, peerAddr(peer))
	return err
}

type peerAddr netip.AddrPort

func (p peerAddr) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	return stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
}

// SendIndication sends data to peer in a Send indication.
func (c *Client) SendIndication(peer netip.AddrPort, data []byte) error {
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), peerAddr(peer),
		stun.RawAttribute{Type: stun.AttrData, Value: data})
	if err != nil {
		return fmt.Errorf("turnclient: %w", err)
	}
	return c.write(m.Raw)
}

// SendChannelData sends data on channel number, padded to a multiple of four bytes over TCP.
func (c *Client) SendChannelData(number uint16, data []byte) error {
	c.wbuf = AppendChannelData(c.wbuf[:0], number, data, c.network == "tcp")
	return c.write(c.wbuf)
}

// WriteRaw sends b as it is: one datagram over UDP, bytes of the stream over TCP.
func (c *Client) WriteRaw(b []byte) error { return c.write(b) }

func (c *Client) write(b []byte) error {
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("turnclient: %w", err)
	}
	return nil
}

// AppendChannelData appends a ChannelData frame carrying data on channel number to b, padded when pad is set.
func AppendChannelData(b []byte, number uint16, data []byte, pad bool) []byte {
	b = binary.BigEndian.AppendUint16(b, number)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	b = append(b, data...)
	if pad {
		for i := len(data); i%4 != 0; i++ {
			b = append(b, 0)
		}
	}
	return b
}

// Frame is what the server sent: a ChannelData frame (Channel set, Data its data) or a STUN message (Message set).
type Frame struct {
	Channel uint16
	Data    []byte
	Message *stun.Message
	Raw     []byte // the whole datagram or frame, valid until the next read
}

// SetReadDeadline sets the deadline of the next reads.
func (c *Client) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// Read returns the next datagram or frame from the server. Its Data and Raw are valid until the next read. A
// ChannelData frame announcing more data than it carries is returned with Channel set and Data nil.
func (c *Client) Read() (Frame, error) {
	raw, err := c.readRaw()
	if err != nil {
		return Frame{}, err
	}
	if len(raw) >= HeaderSize && raw[0]&0xC0 == 0x40 {
		f := Frame{Channel: binary.BigEndian.Uint16(raw), Raw: raw}
		if n := int(binary.BigEndian.Uint16(raw[2:])); HeaderSize+n <= len(raw) {
			f.Data = raw[HeaderSize : HeaderSize+n]
		}
		return f, nil
	}
	m := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := m.Decode(); err != nil {
		return Frame{Raw: raw}, fmt.Errorf("turnclient: neither ChannelData nor STUN from the server: %w", err)
	}
	return Frame{Message: m, Raw: raw}, nil
}

func (c *Client) readRaw() ([]byte, error) {
	if c.network == "udp" {
		n, err := c.conn.Read(c.rbuf)
		if err != nil {
			return nil, fmt.Errorf("turnclient: %w", err)
		}
		return c.rbuf[:n], nil
	}
	hdr, err := c.rd.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("turnclient: %w", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	switch {
	case hdr[0]&0xC0 == 0x40:
		n = HeaderSize + (n+3)&^3
	case hdr[0]&0xC0 == 0:
		n += 20
	default:
		return nil, fmt.Errorf("turnclient: the server sent a frame starting with %#x", hdr[0])
	}
	if _, err := io.ReadFull(c.rd, c.rbuf[:n]); err != nil {
		return nil, fmt.Errorf("turnclient: %w", err)
	}
	return c.rbuf[:n], nil
}

// do sends a request of method with attrs, authenticated once the server has told its realm and nonce, and
// returns the success response. It answers a 401 or 438 by retrying with the realm and nonce it got.
func (c *Client) do(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for range 3 {
		req, err := c.build(method, attrs)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err != nil {
			return nil, err
		}
		if resp.Type.Class == stun.ClassSuccessResponse {
			return resp, nil
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(resp); err != nil {
			return nil, fmt.Errorf("turnclient: %v: an error response without a code: %w", method, err)
		}
		if code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce {
			var realm stun.Realm
			var nonce stun.Nonce
			if realm.GetFrom(resp) == nil && nonce.GetFrom(resp) == nil &&
				(c.nonce == "" || code.Code == stun.CodeStaleNonce) {
				c.realm, c.nonce = realm.String(), nonce.String()
				continue
			}
		}
		return nil, &Error{Method: method, Code: code.Code, Reason: string(code.Reason)}
	}
	return nil, fmt.Errorf("turnclient: %v: the server keeps asking for credentials", method)
}

func (c *Client) build(method stun.Method, attrs []stun.Setter) (*stun.Message, error) {
	setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
	setters = append(setters, attrs...)
	if c.nonce != "" {
		setters = append(setters, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
			stun.NewLongTermIntegrity(c.username, c.realm, c.password))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, fmt.Errorf("turnclient: building %v: %w", method, err)
	}
	return m, nil
}

// roundTrip sends req until its response comes (over UDP, every RTO, a few times), dropping anything else.
func (c *Client) roundTrip(req *stun.Message) (*stun.Message, error) {
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	tries := retries
	if c.network == "tcp" {
		tries = 1
	}
	for range tries {
		if err := c.write(req.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(c.rto)
		if c.network == "tcp" {
			deadline = time.Now().Add(c.rto * retries)
		}
		_ = c.conn.SetReadDeadline(deadline)
		for {
			f, err := c.Read()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil && f.Raw == nil {
				return nil, err
			}
			if m := f.Message; m != nil && m.TransactionID == req.TransactionID &&
				(m.Type.Class == stun.ClassSuccessResponse || m.Type.Class == stun.ClassErrorResponse) {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrTimeout, req.Type)
}
