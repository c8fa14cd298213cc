package ws

import (
	"bytes"
	"encoding/base64"

	"tandem/internal/rfc6455"
)

// Request is what an Acceptor is told of a WebSocket handshake that the epoll loop can complete itself.
type Request struct {
	Path   string // the request target up to any '?', e.g. "/ws"
	Host   string // the Host header, with its port if it has one
	Origin string // the Origin header; "" when the client (not a browser) sent none
}

// An Acceptor decides which handshakes the epoll loop completes. It returns the function that makes the new
// connection's Handler, as Upgrade's newHandler, or nil to leave the request to net/http (another path, a refused
// origin): the request is then served as if the loop had never seen it.
type Acceptor func(r *Request) func(*Conn) Handler

// maxRequest is the largest handshake the loop reads itself; a longer one is passed to net/http, whose limit is
// its own.
const maxRequest = 8 << 10

// handshake is what the loop knows of a request whose handshake it may complete.
type handshake struct {
	Request
	key []byte // Sec-WebSocket-Key, checked: base64 of 16 bytes
	// forwardedFor and forwarded are the X-Forwarded-For and Forwarded headers (repeated lines joined with
	// commas), looked at only when the peer is a trusted proxy.
	forwardedFor, forwarded string
}

// parseHandshake reads a request that is complete (it ends with the empty line) and reports whether it is a
// WebSocket handshake the loop may answer itself: GET, HTTP/1.1, an origin-form target, Host, "Upgrade:
// websocket", "Connection: upgrade", version 13 and a valid key, no body, and nothing net/http would judge
// differently (folded or malformed lines, a repeated header the handshake depends on, control bytes). Everything
// else, including handshakes that must be refused, is left to net/http, which answers it as always.
func parseHandshake(req []byte) (handshake, bool) {
	var hs handshake
	line, rest, ok := cutLine(req)
	if !ok {
		return hs, false
	}
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		return hs, false
	}
	target, ok = bytes.CutSuffix(target, []byte(" HTTP/1.1"))
	if !ok || len(target) == 0 || target[0] != '/' {
		return hs, false
	}
	for _, b := range target {
		if b <= ' ' || b >= 0x7f {
			return hs, false
		}
	}
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	hs.Path = string(target)

	var seen uint8
	var upgrade, connection, version bool
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return hs, false
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return hs, false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, b := range name {
			if !isTokenByte(b) {
				return hs, false
			}
		}
		for _, b := range value {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return hs, false
			}
		}
		var bit uint8
		switch {
		case asciiEqualFold(name, "host"):
			bit, hs.Host = 1, string(value)
		case asciiEqualFold(name, "origin"):
			bit, hs.Origin = 2, string(value)
		case asciiEqualFold(name, "sec-websocket-key"):
			bit, hs.key = 4, value
		case asciiEqualFold(name, "sec-websocket-version"):
			bit, version = 8, string(value) == "13"
		case asciiEqualFold(name, "upgrade"):
			bit, upgrade = 16, hasToken(value, "websocket")
		case asciiEqualFold(name, "connection"):
			connection = connection || hasToken(value, "upgrade")
		case asciiEqualFold(name, "x-forwarded-for"):
			hs.forwardedFor = joinHeader(hs.forwardedFor, value)
		case asciiEqualFold(name, "forwarded"):
			hs.forwarded = joinHeader(hs.forwarded, value)
		case asciiEqualFold(name, "content-length"), asciiEqualFold(name, "transfer-encoding"):
			return hs, false
		}
		if seen&bit != 0 {
			return hs, false // a repeated header the handshake depends on: net/http decides
		}
		seen |= bit
	}
	if len(rest) != 0 || !upgrade || !connection || !version || !validHost(hs.Host) {
		return hs, false
	}
	// Base64 of 16 bytes is 24 characters; checking the length first also keeps a longer key from overflowing k
	// (a key decoding to more than 18 bytes used to panic here).
	var k [18]byte
	if len(hs.key) != 24 {
		return hs, false
	}
	if n, err := base64.StdEncoding.Decode(k[:], hs.key); err != nil || n != 16 {
		return hs, false
	}
	return hs, true
}

// joinHeader adds a repeated header line's value to those before it, as a comma-separated list.
func joinHeader(before string, value []byte) string {
	if before == "" {
		return string(value)
	}
	return before + "," + string(value)
}

// switchingProtocols is the answer to a handshake with key.
func switchingProtocols(key []byte) []byte {
	b := make([]byte, 0, 160)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = rfc6455.AppendAccept(b, key)
	return append(b, "\r\n\r\n"...)
}

// cutLine splits off the first CRLF-terminated line. A bare LF or CR is not accepted.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hasToken reports whether the comma-separated list v has token, ignoring case.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if asciiEqualFold(trimOWS(t), token) {
			return true
		}
	}
	return false
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// isTokenByte reports whether b may be in a header name (RFC 9110, section 5.6.2).
func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), b) >= 0
}

// validHost accepts the host names and addresses a browser or a client sends (name or IP literal, and a port),
// and nothing else: anything odd is for net/http to judge.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		b := h[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case b == '.' || b == '-' || b == ':' || b == '[' || b == ']' || b == '_':
		default:
			return false
		}
	}
	return true
}
