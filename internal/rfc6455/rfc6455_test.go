package rfc6455

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"testing"
)

func TestAppendAccept(t *testing.T) {
	const key, want = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // section 1.3
	if got := string(AppendAccept([]byte("x"), []byte(key))); got != "x"+want {
		t.Errorf("AppendAccept(x, %q) = %q, want x%q", key, got, want)
	}
}

func TestMask(t *testing.T) {
	for n := range 21 {
		for _, key := range []uint32{0, 0x01020304, 0xdeadbeef, rand.Uint32()} {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rand.Uint32())
			}
			k := binary.LittleEndian.AppendUint32(nil, key) // the key as it is on the wire
			got := bytes.Clone(p)
			Mask(got, key)
			for i := range p {
				if got[i] != p[i]^k[i%4] {
					t.Fatalf("Mask(%d bytes, %#x): byte %d is %#x, want %#x", n, key, i, got[i], p[i]^k[i%4])
				}
			}
			if Mask(got, key); !bytes.Equal(got, p) {
				t.Fatalf("Mask(%d bytes, %#x) twice = %x, want %x", n, key, got, p)
			}
		}
	}
}

func TestHeaderHasToken(t *testing.T) {
	h := http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"WebSocket"}}
	for _, c := range []struct {
		name, token string
		want        bool
	}{
		{"Connection", "upgrade", true},
		{"Connection", "keep-alive", true},
		{"Connection", "close", false},
		{"Upgrade", "websocket", true},
		{"Sec-WebSocket-Extensions", "", false},
	} {
		if got := HeaderHasToken(h, c.name, c.token); got != c.want {
			t.Errorf("HeaderHasToken(%s, %q) = %v, want %v", c.name, c.token, got, c.want)
		}
	}
}
