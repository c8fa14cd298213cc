package turnserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// FuzzTCPFrames checks the framing a TCP connection's Read cuts its stream by, against the rules of RFC 8656
// (section 11.5) and RFC 8489 written out again here, and that it is consistent as the stream comes in pieces.
func FuzzTCPFrames(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0})
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{0x00, 0x01, 0x00, 0x02, 0x21, 0x12, 0xA4, 0x42})
	f.Add([]byte{0x7F, 0xFF, 0x06, 0x3C})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := frameSize(b)
		// The rules, independently.
		wantErr, wantSize := error(nil), 0
		switch {
		case len(b) == 0:
		case b[0] >= 0x80:
			wantErr = errTCPGarbage
		case b[0] >= 0x40 && len(b) >= 4:
			wantSize = 4 + int(binary.BigEndian.Uint16(b[2:]))
			wantSize += (4 - wantSize%4) % 4
		case b[0] < 0x40 && len(b) >= 8:
			length := int(binary.BigEndian.Uint16(b[2:]))
			if !bytes.Equal(b[4:8], []byte{0x21, 0x12, 0xA4, 0x42}) || length%4 != 0 {
				wantErr = errTCPGarbage
			} else {
				wantSize = 20 + length
			}
		}
		if wantErr == nil && wantSize > maxTCPFrame {
			wantErr = errTCPOversize
		}
		if wantErr == nil && wantSize > len(b) {
			wantSize = 0 // not all there yet
		}
		if wantErr != nil {
			wantSize = 0
		}
		if !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) || size != wantSize {
			t.Fatalf("frameSize(% x) = %d, %v; want %d, %v", b, size, err, wantSize, wantErr)
		}
		// Every prefix is incomplete, or already the same verdict.
		for k := range len(b) {
			ps, perr := frameSize(b[:k])
			switch {
			case perr != nil && !errors.Is(err, perr):
				t.Fatalf("prefix %d refused (%v), the whole not (%d, %v)", k, perr, size, err)
			case perr == nil && ps != 0 && ps != size:
				t.Fatalf("prefix %d is a frame of %d bytes, the whole one of %d", k, ps, size)
			}
		}
	})
}

// FuzzChannelDataFromClient feeds what a client may send as ChannelData to a relay with channel 0x4000 bound,
// and checks that tandem relays exactly the frames pion would relay (a bound channel, a length that fits), and
// exactly their data, and leaves every other one to pion.
func FuzzChannelDataFromClient(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 'a', 'b', 'c', 0})
	f.Add([]byte{0x40, 0x00, 0x00, 0x00})
	f.Add([]byte{0x40, 0x00, 0x00, 0x09, 'a'})
	f.Add([]byte{0x40, 0x01, 0x00, 0x01, 'a'})
	f.Add([]byte{0x7F, 0xFF, 0x00, 0x01, 'a'})
	s, relay, peer := fuzzRelay(f)
	rc := s.relayAt(net.UDPAddrFromAddrPort(relay))
	buf := make([]byte, 70000)
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isChannelData(b) { // callers only offer what starts like ChannelData
			return
		}
		length := int(binary.BigEndian.Uint16(b[2:]))
		want := binary.BigEndian.Uint16(b) == 0x4000 && 4+length <= len(b)
		if got := rc.fromClient(b); got != want {
			t.Fatalf("fromClient(% x) = %v, want %v", b, got, want)
		}
		// What is relayed is awaited (the machine may be busy); that nothing came is seen after a short wait, and
		// anything that came later would be found by the next input's read.
		wait := 20 * time.Millisecond
		if want {
			wait = 5 * time.Second
		}
		_ = peer.SetReadDeadline(time.Now().Add(wait))
		n, _, err := peer.ReadFromUDPAddrPort(buf)
		switch {
		case want && (err != nil || !bytes.Equal(buf[:n], b[4:4+length])):
			t.Fatalf("the peer got % x (%v), want % x", buf[:n], err, b[4:4+length])
		case !want && err == nil:
			t.Fatalf("the peer got % x from a frame left to pion", buf[:n])
		}
	})
}

// fuzzRelay starts a server for a fuzz target, with an allocation whose channel 0x4000 is bound to a peer.
func fuzzRelay(f *testing.F) (*Server, netip.AddrPort, *net.UDPConn) {
	f.Helper()
	s, _ := startServer(f, func(c *Config) { c.AllowLoopback = true })
	_, relay, peer := bindOne(f, s, "udp")
	return s, relay, peer
}
