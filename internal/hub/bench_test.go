package hub

import (
	"strings"
	"testing"
)

// sink is a Conn that only counts what it is sent, so that a benchmark measures the hub and not its stand-in.
type sink struct{ bytes, msgs int }

func (s *sink) LoggedIn() {}

func (s *sink) Send(msg []byte) bool { s.bytes += len(msg); s.msgs++; return true }
func (s *sink) Close(int, string)    {}

// benchPayloads are messages as the tutorial's browser client sends them, of a browser's sizes: an offer of about
// 2.7 KB of SDP, an answer of about 2.2 KB, a candidate of about 260 bytes.
func benchPayloads() map[string]string {
	sdp := func(n int) string {
		line := `a=rtcp-fb:96 transport-cc\r\n`
		return `v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n` + strings.Repeat(line, n/len(line))
	}
	return map[string]string{
		"offer":     `{"type":"offer","offer":{"type":"offer","sdp":"` + sdp(2600) + `"},"name":"bob"}`,
		"answer":    `{"type":"answer","answer":{"type":"answer","sdp":"` + sdp(2150) + `"},"name":"bob"}`,
		"candidate": `{"type":"candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61220 typ srflx raddr 192.168.1.23 rport 52364 generation 0 ufrag Vc3e network-id 1 network-cost 10","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Vc3e"},"name":"bob"}`,
	}
}

// BenchmarkRoute decodes one message from alice and routes it to bob, who answered her call: the decoder,
// the hub's lookup and call check under its lock, and the encoding of the relayed message (the payload copied
// through as raw JSON), without the network.
func BenchmarkRoute(b *testing.B) {
	for _, typ := range []string{"offer", "answer", "candidate"} {
		b.Run(typ, func(b *testing.B) {
			h := New(Config{})
			a, bob := &sink{}, &sink{}
			alice := h.Connect(a, "example.test")
			callee := h.Connect(bob, "example.test")
			alice.OnText([]byte(`{"type":"login","name":"alice"}`))
			callee.OnText([]byte(`{"type":"login","name":"bob"}`))
			msgs := benchPayloads()
			alice.OnText([]byte(msgs["offer"])) // the call starts
			if bob.msgs != 2 {
				b.Fatalf("bob got %d messages, want a login reply and an offer", bob.msgs)
			}
			callee.OnText([]byte(`{"type":"answer","answer":{"type":"answer","sdp":""},"name":"alice"}`))
			if a.msgs != 3 {
				b.Fatalf("alice got %d messages, want a login reply, ringing and the answer", a.msgs)
			}
			msg := []byte(msgs[typ])
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				alice.OnText(msg)
			}
			if bob.msgs != 2+b.N {
				b.Fatalf("bob got %d messages, want %d", bob.msgs-2, b.N)
			}
		})
	}
}

// TestRouteAllocatesNothing keeps the single-node relay path free of allocations (BenchmarkRoute measures it;
// this fails the build when it regresses): the cluster mode's branches must cost a single node nothing.
func TestRouteAllocatesNothing(t *testing.T) {
	h := New(Config{})
	a, bob := &sink{}, &sink{}
	alice := h.Connect(a, "example.test")
	callee := h.Connect(bob, "example.test")
	alice.OnText([]byte(`{"type":"login","name":"alice"}`))
	callee.OnText([]byte(`{"type":"login","name":"bob"}`))
	msgs := benchPayloads()
	alice.OnText([]byte(msgs["offer"]))
	callee.OnText([]byte(`{"type":"answer","answer":{"type":"answer","sdp":""},"name":"alice"}`))
	for _, typ := range []string{"offer", "answer", "candidate"} {
		msg := []byte(msgs[typ])
		if n := testing.AllocsPerRun(100, func() { alice.OnText(msg) }); n != 0 {
			t.Errorf("relaying an %s allocates %v times", typ, n)
		}
	}
	if bob.msgs != 2+3*101 {
		t.Fatalf("bob got %d messages", bob.msgs)
	}
}
