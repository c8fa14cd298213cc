package client

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"tandem/protocol"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{"login ok", `{"type":"login","success":true,"name":"alice","token":"t0k","iceServers":[{"urls":["stun:127.0.0.1:3478"]},{"urls":["turn:127.0.0.1:3478"],"username":"u","credential":"c"}]}`,
			Message{Type: "login", Success: true, Name: "alice", Token: "t0k", ICEServers: []protocol.ICEServer{
				{URLs: []string{"stun:127.0.0.1:3478"}},
				{URLs: []string{"turn:127.0.0.1:3478"}, Username: "u", Credential: "c"},
			}}},
		{"login resumed", `{"type":"login","success":true,"name":"alice","token":"x","peer":"bob"}`,
			Message{Type: "login", Success: true, Name: "alice", Token: "x", Peer: "bob"}},
		{"login refused", `{"type":"login","success":false,"code":"name_taken","message":"the name alice is taken"}`,
			Message{Type: "login", Code: "name_taken", Message: "the name alice is taken"}},
		{"tutorial login", `{"type":"login","success":true}`, Message{Type: "login", Success: true}},
		{"offer", `{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"},"name":"alice"}`,
			Message{Type: "offer", Name: "alice", Offer: json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)}},
		{"answer", `{"type":"answer","answer":{"type":"answer","sdp":"v=0"},"name":"bob"}`,
			Message{Type: "answer", Name: "bob", Answer: json.RawMessage(`{"type":"answer","sdp":"v=0"}`)}},
		{"candidate", `{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}`,
			Message{Type: "candidate", Candidate: json.RawMessage(`{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}`)}},
		{"end of candidates", `{"type":"candidate","candidate":null,"name":"bob"}`,
			Message{Type: "candidate", Name: "bob", Candidate: json.RawMessage(`null`)}},
		{"leave", `{"type":"leave","name":"alice","reason":"declined"}`, Message{Type: "leave", Name: "alice", Reason: "declined"}},
		{"tutorial leave", `{"type":"leave"}`, Message{Type: "leave"}},
		{"error", `{"type":"error","code":"not_online","message":"bob is not online","request":"offer","name":"bob"}`,
			Message{Type: "error", Code: "not_online", Message: "bob is not online", Request: "offer", Name: "bob"}},
		{"users", `{"type":"users","query":"al","users":[{"name":"alice","busy":false},{"name":"echo","busy":true,"echo":true}],"more":true,"total":5120}`,
			Message{Type: "users", Query: "al", Users: []User{{Name: "alice"}, {Name: "echo", Busy: true, Echo: true}}, More: true, Total: 5120}},
		{"unknown fields and escapes", `{"x":[1,{"y":null}],"ty\u0070e":"ringing","name":"b\u00f6b \"q\"","z":1.5e3}`,
			Message{Type: "ringing", Name: `böb "q"`}},
		{"null fields", `{"type":"login","name":null,"success":null,"total":null}`, Message{Type: "login"}},
	}
	for _, tt := range tests {
		var m Message
		m.Name = "stale" // Decode must reset
		if err := Decode([]byte(tt.in), &m); err != nil {
			t.Errorf("%s: Decode: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(m, tt.want) {
			t.Errorf("%s: got\n%+v\nwant\n%+v", tt.name, m, tt.want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`Hello world`, ``, `[]`, `"login"`, `{}`, `{"type":1}`, `{"type":null}`, `{"type":"login"`, `{"type":"login"} {}`,
		`{"type":"login","success":"yes"}`, `{"type":"users","total":"many"}`, `{"type":"login","name":5}`,
		`{"type":"users","users":{}}`,
	} {
		var m Message
		err := Decode([]byte(in), &m)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("Decode(%q) = %v, want a *DecodeError", in, err)
		}
	}
}

func TestDecodeKeepsNoReference(t *testing.T) {
	t.Parallel()
	data := []byte(`{"type":"offer","offer":{"type":"offer","sdp":"abc"},"name":"alice"}`)
	var m Message
	if err := Decode(data, &m); err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 'x'
	}
	if m.Name != "alice" || string(m.Offer) != `{"type":"offer","sdp":"abc"}` {
		t.Fatalf("message changed with its input: %+v", m)
	}
}

func TestMessageErr(t *testing.T) {
	t.Parallel()
	m := &Message{Type: "error", Code: "busy", Message: "bob is busy", Request: "offer", Name: "bob"}
	err := m.Err()
	if !errors.Is(err, ErrBusy) || errors.Is(err, ErrNotOnline) {
		t.Fatalf("errors.Is on %v: wrong", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Name != "bob" || e.Request != "offer" {
		t.Fatalf("errors.As: %+v", e)
	}
	if (&Message{Type: "login", Success: true}).Err() != nil {
		t.Fatal("a successful login is an error")
	}
	if !errors.Is((&Message{Type: "login", Code: "name_taken"}).Err(), ErrNameTaken) {
		t.Fatal("a refused login is not ErrNameTaken")
	}
	if !strings.Contains(err.Error(), "busy") {
		t.Fatalf("message %q", err)
	}
}

func TestAppendString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "alice", `q"b\s`, "tab\tnl\ncr\r\x00\x1f\x7f", "böb ✓ 😀", "\u2028\u2029", "bad\xffutf8\xc3"} {
		got := protocol.AppendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("protocol.AppendString(%q) = %s: not JSON: %v", s, got, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if s == "bad\xffutf8\xc3" {
			want = "bad\ufffdutf8\ufffd"
		}
		if back != want {
			t.Errorf("protocol.AppendString(%q) round trip = %q", s, back)
		}
	}
}

func BenchmarkDecodeOffer(b *testing.B) {
	sdp := strings.Repeat("a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0\\r\\n", 30)
	data := []byte(`{"type":"offer","offer":{"type":"offer","sdp":"` + sdp + `"},"name":"alice"}`)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var m Message
	for b.Loop() {
		if err := Decode(data, &m); err != nil {
			b.Fatal(err)
		}
	}
}
