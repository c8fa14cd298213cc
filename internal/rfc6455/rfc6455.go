// Package rfc6455 holds what both ends of a WebSocket (RFC 6455) share in tandem: the opcodes, the masking of a
// payload, the handshake's accept key and its header tokens. The server (internal/ws) and the client (client/)
// each frame messages their own way on top of it.
package rfc6455

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strings"
)

// Opcodes (section 5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Mask XORs b with a masking key (section 5.3); the key's lowest byte is the first on the wire, as
// binary.LittleEndian writes and reads it. Masking twice gives b back.
func Mask(b []byte, key uint32) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= byte(key >> (8 * (i & 3)))
	}
}

// AppendAccept appends the Sec-WebSocket-Accept value for the client's Sec-WebSocket-Key (section 4.2.2).
func AppendAccept(dst, key []byte) []byte {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(dst, h.Sum(sum[:0]))
}

// HeaderHasToken reports whether one of the comma-separated tokens of header name is token, in any case
// (Connection: keep-alive, Upgrade).
func HeaderHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
