package ws

import (
	"testing"

	"tandem/internal/rfc6455"
)

// nopHandler takes messages and does nothing with them.
type nopHandler struct{}

func (nopHandler) OnText([]byte)  {}
func (nopHandler) OnBinary()      {}
func (nopHandler) OnTooLarge(int) {}
func (nopHandler) OnClose()       {}

// BenchmarkReadFrames is the reader's share of a relayed message: a read holding 16 candidate-sized text frames,
// unmasked, checked and handed to the Handler (here one that does nothing); and the same bytes arriving in reads
// that end inside a frame, so that the reader keeps a partial frame between them.
func BenchmarkReadFrames(b *testing.B) {
	srv, err := NewServer(Config{NoEpoll: true})
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(`{"type":"candidate","name":"bob","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61220 typ srflx raddr 192.168.1.23 rport 52364 generation 0","sdpMid":"0","sdpMLineIndex":0}}`)
	var stream []byte
	for range 16 {
		stream = append(stream, frame(true, rfc6455.OpText, msg, true)...)
	}
	for _, bc := range []struct {
		name  string
		split int
	}{{"whole", len(stream)}, {"split", 1000}} {
		b.Run(bc.name, func(b *testing.B) {
			c := &Conn{srv: srv, fd: -1, h: nopHandler{}}
			buf := make([]byte, len(stream))
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				// The reader unmasks in place, as it does in the loop's buffer: each round starts from a fresh copy.
				copy(buf, stream)
				for data := buf; len(data) > 0; {
					n := min(bc.split, len(data))
					if !c.onData(data[:n]) {
						b.Fatal("connection dropped")
					}
					data = data[n:]
				}
			}
		})
	}
}
