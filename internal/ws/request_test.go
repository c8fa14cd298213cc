package ws

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

const handshakeRequest = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func TestParseHandshake(t *testing.T) {
	ok := handshakeRequest
	for _, tt := range []struct {
		name string
		req  string
		want bool
		path string
	}{
		{"handshake", ok, true, "/"},
		{"path and query", strings.Replace(ok, "GET / ", "GET /ws?room=1 ", 1), true, "/ws"},
		{"header case and spaces", strings.NewReplacer("Upgrade: websocket", "upgrade:WebSocket  ", "Connection: Upgrade", "CONNECTION: keep-alive, Upgrade").Replace(ok), true, "/"},
		{"origin", strings.Replace(ok, "Host: x\r\n", "Host: x:9090\r\nOrigin: http://x:9090\r\n", 1), true, "/"},
		{"POST", strings.Replace(ok, "GET", "POST", 1), false, ""},
		{"HTTP/1.0", strings.Replace(ok, "HTTP/1.1", "HTTP/1.0", 1), false, ""},
		{"absolute target", strings.Replace(ok, "GET / ", "GET http://x/ ", 1), false, ""},
		{"no Host", strings.Replace(ok, "Host: x\r\n", "", 1), false, ""},
		{"two Hosts", strings.Replace(ok, "Host: x\r\n", "Host: x\r\nHost: y\r\n", 1), false, ""},
		{"odd Host", strings.Replace(ok, "Host: x", "Host: x/y", 1), false, ""},
		{"version 8", strings.Replace(ok, "Version: 13", "Version: 8", 1), false, ""},
		{"short key", strings.Replace(ok, "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1), false, ""},
		{"key of 21 bytes", strings.Replace(ok, "dGhlIHNhbXBsZSBub25jZQ==", strings.Repeat("A", 28), 1), false, ""},
		{"key of 33 bytes", strings.Replace(ok, "dGhlIHNhbXBsZSBub25jZQ==", strings.Repeat("A", 44), 1), false, ""},
		{"key of 18 bytes", strings.Replace(ok, "dGhlIHNhbXBsZSBub25jZQ==", strings.Repeat("A", 24)+"AA==", 1), false, ""},
		{"unpadded key", strings.Replace(ok, "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", 1), false, ""},
		{"no Upgrade", strings.Replace(ok, "Upgrade: websocket\r\n", "", 1), false, ""},
		{"no Connection upgrade", strings.Replace(ok, "Connection: Upgrade", "Connection: keep-alive", 1), false, ""},
		{"folded line", strings.Replace(ok, "Host: x\r\n", "Host: x\r\n y\r\n", 1), false, ""},
		{"space before colon", strings.Replace(ok, "Host: x", "Host : x", 1), false, ""},
		{"bare LF", strings.Replace(ok, "Host: x\r\n", "Host: x\n", 1), false, ""},
		{"control byte", strings.Replace(ok, "Host: x\r\n", "Host: x\r\nX-A: a\x00b\r\n", 1), false, ""},
		{"body", strings.Replace(ok, "Host: x\r\n", "Host: x\r\nContent-Length: 3\r\n", 1), false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs, got := parseHandshake([]byte(tt.req))
			if got != tt.want || (got && hs.Path != tt.path) {
				t.Fatalf("parseHandshake = %v, path %q; want %v, %q", got, hs.Path, tt.want, tt.path)
			}
		})
	}
}

// FuzzParseHandshake: whatever the loop answers itself, net/http reads as the same WebSocket handshake, so that
// taking a request from net/http changes nothing a client can see.
func FuzzParseHandshake(f *testing.F) {
	f.Add([]byte(handshakeRequest))
	f.Add([]byte(strings.Replace(handshakeRequest, "Host: x\r\n", "Host: [::1]:80\r\nOrigin: http://a\r\nConnection: close\r\n", 1)))
	f.Add([]byte("GET /ws?a=b HTTP/1.1\r\nhost: a\r\nupgrade: x, websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n"))
	// Keys of every length up to 48 characters, padded and not.
	for n := 0; n <= 48; n++ {
		for _, key := range []string{strings.Repeat("A", n), strings.Repeat("Q", max(n-2, 0)) + "=="[:min(n, 2)]} {
			f.Add([]byte(strings.Replace(handshakeRequest, "dGhlIHNhbXBsZSBub25jZQ==", key, 1)))
		}
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		end := bytes.Index(req, []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		req = req[:end+4]
		hs, ok := parseHandshake(req)
		if !ok {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(req)))
		if err != nil {
			t.Fatalf("taken by the loop, refused by net/http: %v\n%q", err, req)
		}
		path, _, _ := strings.Cut(r.RequestURI, "?")
		switch {
		case r.Method != http.MethodGet, !IsWebSocket(r), r.Header.Get("Sec-WebSocket-Version") != "13":
			t.Fatalf("not a handshake for net/http: %q", req)
		case path != hs.Path, r.Host != hs.Host, r.Header.Get("Origin") != hs.Origin, r.Header.Get("Sec-WebSocket-Key") != string(hs.key):
			t.Fatalf("net/http reads %q %q %q %q; the loop %+v %q", path, r.Host, r.Header.Get("Origin"), r.Header.Get("Sec-WebSocket-Key"), hs.Request, hs.key)
		}
		// The key the loop answers is one Upgrade would answer too.
		if k, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(k) != 16 {
			t.Fatalf("the loop answers a key Upgrade refuses: %q", hs.key)
		}
	})
}
