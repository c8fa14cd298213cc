package hub

import (
	"bytes"
	"testing"

	"tandem/protocol"
)

// relayedFrames are frames as a node builds them for a user of another node: relayed messages around the
// payloads of benchPayloads and some of other shapes, and leaves.
func relayedFrames(t testing.TB) [][]byte {
	var frames [][]byte
	for _, msg := range benchPayloads() {
		var m protocol.Message
		if err := protocol.Decode([]byte(msg), &m); err != nil {
			t.Fatal(err)
		}
		payload := m.Offer
		if payload == nil {
			payload = m.Answer
		}
		if payload == nil {
			payload = m.Candidate
		}
		frames = append(frames, protocol.AppendRelay(nil, string(m.Type), payload, "alice"))
	}
	frames = append(frames,
		protocol.AppendRelay(nil, protocol.TypeCandidate, []byte("null"), "bob"),
		protocol.AppendRelay(nil, protocol.TypeOffer, []byte(`{"type":"offer","sdp":"x","name":"mallory"}`), `a"b,"name":"c`),
		protocol.AppendRelay(nil, protocol.TypeAnswer, []byte(`{"name":"x"}`), "Ünïcode"),
		protocol.AppendLeave(nil, "alice", protocol.ReasonHangup),
		protocol.AppendLeave(nil, `x","reason":"y`, protocol.ReasonNoAnswer),
	)
	return frames
}

// sameAsDecode fails unless readRelayed reads frame as protocol.Decode does (the name aside).
func sameAsDecode(t testing.TB, frame []byte) {
	t.Helper()
	var fast, slow protocol.Message
	if !readRelayed(frame, &fast) {
		t.Fatalf("readRelayed refused %s", frame)
	}
	if err := protocol.Decode(frame, &slow); err != nil {
		t.Fatalf("Decode refused %s: %v", frame, err)
	}
	slow.Name, slow.HasName = nil, false
	for _, f := range [][2][]byte{{fast.Type, slow.Type}, {fast.Offer, slow.Offer}, {fast.Answer, slow.Answer},
		{fast.Candidate, slow.Candidate}, {fast.Reason, slow.Reason}} {
		if !bytes.Equal(f[0], f[1]) || (f[0] == nil) != (f[1] == nil) {
			t.Fatalf("%s: readRelayed read %q, Decode %q", frame, f[0], f[1])
		}
	}
}

// TestReadRelayed: a frame another node built is read as Decode reads it, and what is not such a frame is left
// to Decode.
func TestReadRelayed(t *testing.T) {
	for _, f := range relayedFrames(t) {
		sameAsDecode(t, f)
	}
	for _, f := range []string{``, `{"type":"offer"}`, `{"type":"offer","offer":{},"name":"a"`, `{"type":"offer","offer":,"name":"a"}`,
		`{"type":"offer","offer":[],"name":"a"}`, `{"type":"candidate","candidate":nul,"name":"a"}`, `{"type":"leave","name":"a"}`,
		`{"type":"leave","name":"a","reason":"x\"y"}`, `{"type":"ringing","name":"a"}`, `{"name":"a","type":"offer","offer":{}}`} {
		var m protocol.Message
		if readRelayed([]byte(f), &m) {
			t.Errorf("readRelayed took %s", f)
		}
	}
}

// FuzzReadRelayed: for any payload a user's message can carry (Decode accepts it), the frame a node builds
// around it is read as Decode reads it; and no input makes readRelayed panic.
func FuzzReadRelayed(f *testing.F) {
	for _, msg := range benchPayloads() {
		f.Add([]byte(msg), "alice")
	}
	f.Add([]byte(`{"type":"leave","name":"bob","reason":"declined"}`), "x")
	f.Add([]byte(`{"type":"candidate","candidate":null,"name":"bob"}`), `"q"`)
	f.Fuzz(func(t *testing.T, msg []byte, from string) {
		var m protocol.Message
		readRelayed(msg, &m)
		if protocol.Decode(msg, &m) != nil {
			return
		}
		var frame []byte
		switch string(m.Type) {
		case protocol.TypeOffer:
			if m.Offer == nil {
				return
			}
			frame = protocol.AppendRelay(nil, protocol.TypeOffer, m.Offer, from)
		case protocol.TypeAnswer:
			if m.Answer == nil {
				return
			}
			frame = protocol.AppendRelay(nil, protocol.TypeAnswer, m.Answer, from)
		case protocol.TypeCandidate:
			if m.Candidate == nil {
				return
			}
			frame = protocol.AppendRelay(nil, protocol.TypeCandidate, m.Candidate, from)
		case protocol.TypeLeave:
			switch r := string(m.Reason); r {
			case protocol.ReasonHangup, protocol.ReasonDeclined, protocol.ReasonNoAnswer, protocol.ReasonCancelled:
				frame = protocol.AppendLeave(nil, from, r)
			default:
				return
			}
		default:
			return
		}
		sameAsDecode(t, frame)
	})
}

// BenchmarkRemoteFrame reads a frame from another node: with readRelayed, or with protocol.Decode as before.
func BenchmarkRemoteFrame(b *testing.B) {
	frames := relayedFrames(b)[:3]
	for _, read := range []struct {
		name string
		f    func([]byte, *protocol.Message) bool
	}{
		{"readRelayed", readRelayed},
		{"Decode", func(f []byte, m *protocol.Message) bool { return protocol.Decode(f, m) == nil }},
	} {
		for _, frame := range frames {
			b.Run(read.name+"/"+frameType(frame), func(b *testing.B) {
				b.SetBytes(int64(len(frame)))
				var m protocol.Message
				for b.Loop() {
					m = protocol.Message{}
					if !read.f(frame, &m) {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
