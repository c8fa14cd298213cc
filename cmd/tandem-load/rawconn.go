package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"tandem/internal/rfc6455"
)

// rawConn is a WebSocket connection framed by hand, for what the project's client will not send: a frame cut
// off in the middle, a binary frame, a connection that stops half-way through its handshake.
type rawConn struct {
	nc net.Conn
	br *bufio.Reader
	u  *url.URL
}

// dialRaw opens a TCP connection to the server of the generator's -url (ws:// only), from the next local
// address, without a handshake.
func (g *generator) dialRaw(ctx context.Context) (*rawConn, error) {
	u, err := url.Parse(g.cfg.url)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("raw connections need a ws:// URL, not %s", u.Scheme)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	g.mu.Lock()
	d := g.dialers[g.next%len(g.dialers)]
	g.next++
	g.mu.Unlock()
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	return &rawConn{nc: nc, br: bufio.NewReader(nc), u: u}, nil
}

// handshakeRequest is the opening handshake of a WebSocket with key.
func (r *rawConn) handshakeRequest(key string) string {
	return "GET " + r.u.RequestURI() + " HTTP/1.1\r\nHost: " + r.u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// upgrade makes the opening handshake and checks the server's answer.
func (r *rawConn) upgrade() error {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	if _, err := io.WriteString(r.nc, r.handshakeRequest(key)); err != nil {
		return err
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake: %s", resp.Status)
	}
	if want := string(rfc6455.AppendAccept(nil, []byte(key))); resp.Header.Get("Sec-WebSocket-Accept") != want {
		return errors.New("handshake: wrong Sec-WebSocket-Accept")
	}
	return nil
}

// frame returns a masked client frame with opcode op and payload, its header claiming claim bytes of payload
// (len(payload) for a whole frame).
func frame(op byte, payload []byte, claim int) []byte {
	b := []byte{0x80 | op, 0}
	switch {
	case claim < 126:
		b[1] = 0x80 | byte(claim)
	case claim < 1<<16:
		b[1] = 0x80 | 126
		b = binary.BigEndian.AppendUint16(b, uint16(claim))
	default:
		b[1] = 0x80 | 127
		b = binary.BigEndian.AppendUint64(b, uint64(claim))
	}
	var m [4]byte
	_, _ = rand.Read(m[:])
	b = append(b, m[:]...)
	start := len(b)
	b = append(b, payload...)
	rfc6455.Mask(b[start:], binary.LittleEndian.Uint32(m[:]))
	return b
}

// send writes one whole frame.
func (r *rawConn) send(op byte, payload []byte) error {
	_, err := r.nc.Write(frame(op, payload, len(payload)))
	return err
}

// read reads the server's next data frame (unmasked, unfragmented, as tandem sends them), answering pings.
func (r *rawConn) read() (op byte, payload []byte, err error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(r.br, h[:]); err != nil {
			return 0, nil, err
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(r.br, e[:]); err != nil {
				return 0, nil, err
			}
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(r.br, e[:]); err != nil {
				return 0, nil, err
			}
			n = binary.BigEndian.Uint64(e[:])
		}
		if h[1]&0x80 != 0 || n > 1<<20 {
			return 0, nil, fmt.Errorf("unexpected frame from the server: masked or %d bytes", n)
		}
		payload = make([]byte, n)
		if _, err := io.ReadFull(r.br, payload); err != nil {
			return 0, nil, err
		}
		op = h[0] & 0x0f
		if op == rfc6455.OpPing {
			if err := r.send(rfc6455.OpPong, payload); err != nil {
				return 0, nil, err
			}
			continue
		}
		return op, payload, nil
	}
}

// reset closes the connection with a TCP reset (SO_LINGER 0).
func (r *rawConn) reset() {
	if tc, ok := r.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = r.nc.Close()
}
