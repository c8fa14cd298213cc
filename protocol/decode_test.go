package protocol

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		code    string // "" when it decodes
		check   func(*testing.T, *Message)
		errPart string
	}{
		{name: "tutorial login", in: `{"type":"login","name":"alice"}`, check: func(t *testing.T, m *Message) {
			if string(m.Type) != "login" || string(m.Name) != "alice" || !m.HasName {
				t.Errorf("got type %q name %q", m.Type, m.Name)
			}
		}},
		{name: "offer payload raw", in: `{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"} ,"name":"bob"}`, check: func(t *testing.T, m *Message) {
			if string(m.Offer) != `{"type":"offer","sdp":"v=0\r\n"}` {
				t.Errorf("offer = %s", m.Offer)
			}
		}},
		{name: "null candidate", in: `{"type":"candidate","candidate":null,"name":"bob"}`, check: func(t *testing.T, m *Message) {
			if string(m.Candidate) != "null" {
				t.Errorf("candidate = %s", m.Candidate)
			}
		}},
		{name: "escaped name", in: `{"type":"login","name":"\u0061lice\n"}`, check: func(t *testing.T, m *Message) {
			if string(m.Name) != "alice\n" {
				t.Errorf("name = %q", m.Name)
			}
		}},
		{name: "escaped key", in: `{"typ\u0065":"leave"}`, check: func(t *testing.T, m *Message) {
			if string(m.Type) != "leave" {
				t.Errorf("type = %q", m.Type)
			}
		}},
		{name: "last duplicate wins", in: `{"type":"x","type":"users","limit":5,"query":null}`, check: func(t *testing.T, m *Message) {
			if string(m.Type) != "users" || m.Limit != 5 || m.Query != nil {
				t.Errorf("got %+v", m)
			}
		}},
		{name: "null name is absent", in: `{"type":"leave","name":null}`, check: func(t *testing.T, m *Message) {
			if m.HasName {
				t.Error("HasName")
			}
		}},
		{name: "login credentials", in: `{"type":"login","name":"a","password":"p\u00e9","invite":"i","jwt":"j.w.t","device":"d"}`, check: func(t *testing.T, m *Message) {
			if string(m.Password) != "p\u00e9" || string(m.Invite) != "i" || string(m.JWT) != "j.w.t" || string(m.Device) != "d" {
				t.Errorf("got password %q invite %q jwt %q device %q", m.Password, m.Invite, m.JWT, m.Device)
			}
		}},
		{name: "number password", in: `{"type":"login","name":"a","password":1234}`, code: CodeInvalidMessage, errPart: `"password" must be a string`},
		{name: "object jwt", in: `{"type":"login","jwt":{}}`, code: CodeInvalidMessage, errPart: `"jwt"`},
		{name: "unknown fields ignored", in: `{"type":"login","name":"a","extra":[1,2,{"x":-1.5e3}],"t":true}`},
		{name: "empty", in: ``, code: CodeInvalidJSON},
		{name: "hello world", in: `Hello world`, code: CodeInvalidJSON},
		{name: "truncated", in: `{"type":"login"`, code: CodeInvalidJSON},
		{name: "trailing", in: `{"type":"login"} x`, code: CodeInvalidJSON},
		{name: "bad escape", in: `{"type":"lo\gin"}`, code: CodeInvalidJSON},
		{name: "raw newline in string", in: "{\"type\":\"lo\ngin\"}", code: CodeInvalidJSON},
		{name: "bad number", in: `{"type":"users","limit":01}`, code: CodeInvalidJSON},
		{name: "deep", in: `{"type":"offer","offer":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, code: CodeInvalidJSON, errPart: "nested too deeply"},
		{name: "array", in: `[1,2]`, code: CodeInvalidMessage},
		{name: "number", in: `42`, code: CodeInvalidMessage},
		{name: "string", in: `"login"`, code: CodeInvalidMessage},
		{name: "no type", in: `{"name":"a"}`, code: CodeInvalidMessage, errPart: `"type"`},
		{name: "number type", in: `{"type":5}`, code: CodeInvalidMessage, errPart: `"type"`},
		{name: "object name", in: `{"type":"login","name":{"a":1}}`, code: CodeInvalidMessage, errPart: `"name" must be a string`},
		{name: "number name", in: `{"type":"login","name":12}`, code: CodeInvalidMessage, errPart: `"name"`},
		{name: "string offer", in: `{"type":"offer","name":"b","offer":"v=0"}`, code: CodeInvalidMessage, errPart: `"offer"`},
		{name: "array answer", in: `{"type":"answer","name":"b","answer":[]}`, code: CodeInvalidMessage, errPart: `"answer"`},
		{name: "string candidate", in: `{"type":"candidate","name":"b","candidate":"x"}`, code: CodeInvalidMessage, errPart: `"candidate"`},
		{name: "fraction limit", in: `{"type":"users","limit":1.5}`, code: CodeInvalidMessage, errPart: `"limit"`},
		{name: "watch", in: `{"type":"users","watch":true,"query":"al"}`, check: func(t *testing.T, m *Message) {
			if !m.Watch || !m.HasWatch || string(m.Query) != "al" {
				t.Errorf("got watch %v query %q", m.Watch, m.Query)
			}
		}},
		{name: "watch false, last wins", in: `{"type":"users","watch":true,"watch":false}`, check: func(t *testing.T, m *Message) {
			if m.Watch || !m.HasWatch {
				t.Errorf("Watch %v HasWatch %v after \"watch\":false", m.Watch, m.HasWatch)
			}
		}},
		{name: "string watch", in: `{"type":"users","watch":"yes"}`, code: CodeInvalidMessage, errPart: `"watch" must be true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := Decode([]byte(tt.in), &m)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("Decode(%s) = %v", tt.in, err)
				}
				if tt.check != nil {
					tt.check(t, &m)
				}
				return
			}
			de, ok := err.(*DecodeError)
			if !ok {
				t.Fatalf("Decode(%s) = %v, want a *DecodeError with code %s", tt.in, err, tt.code)
			}
			if de.Code != tt.code || !strings.Contains(de.Message, tt.errPart) {
				t.Errorf("Decode(%s) = %s %q, want %s containing %q", tt.in, de.Code, de.Message, tt.code, tt.errPart)
			}
		})
	}
}

func TestDecodeTypeReportedWithFieldError(t *testing.T) {
	var m Message
	err := Decode([]byte(`{"name":5,"type":"offer"}`), &m)
	de, ok := err.(*DecodeError)
	if !ok || de.Type != "offer" {
		t.Fatalf("got %v, want a DecodeError for type offer", err)
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice", "alice", true},
		{"  Zoë Ünïcode 日本 ", "Zoë Ünïcode 日本", true},
		{strings.Repeat("é", 64), strings.Repeat("é", 64), true},
		{strings.Repeat("é", 65), "", false},
		{"", "", false},
		{"   ", "", false},
		{"a\x00b", "", false},
		{"a\tb", "", false},
		{"evil\u202Eexe", "", false},
		{"zero\u200Bwidth", "", false},
		{"\xff\xfe", "", false},
	}
	for _, tt := range tests {
		got, err := ValidateName([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ValidateName(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestAppendMessagesAreJSON(t *testing.T) {
	t.Parallel()
	msgs := [][]byte{
		AppendRelay(nil, TypeOffer, []byte(`{"type":"offer","sdp":"x"}`), "al\"ice\\\x01"),
		AppendRelay(nil, TypeCandidate, nil, "bob"),
		AppendLeave(nil, "bob", ReasonDeclined),
		AppendRinging(nil, "bob"),
		AppendError(nil, CodeNotOnline, "bob is not online", "offer", "bob"),
		AppendError(nil, CodeInvalidJSON, "bad", "", ""),
		AppendRetryError(nil, CodeCooldown, "wait", "offer", "bob", 12),
		AppendLoginOK(nil, LoginOK{Name: "a", Token: "t", Peer: "b", ICEServers: []ICEServer{{URLs: []string{"stun:x"}}, {URLs: []string{"turn:x", "turns:y"}, Username: "u", Credential: "c"}}}),
		AppendLoginFailed(nil, CodeNameTaken, "taken"),
		AppendLoginOK(nil, LoginOK{Name: "a", Token: "t", Device: "d1.x.y"}),
		AppendLoginRefused(nil, CodeRateLimited, "wait", 7),
		AppendUsers(nil, "a", []User{{Name: "a", Busy: true}, {Name: "echo", Echo: true}}, true, 7),
		AppendUsers(nil, "", nil, false, 0),
		AppendString(nil, "bad \xff utf8 \u2028"),
	}
	for _, m := range msgs {
		var v any
		if err := json.Unmarshal(m, &v); err != nil {
			t.Errorf("%s is not JSON: %v", m, err)
		}
	}
	var got struct {
		Type  string
		Offer struct{ SDP string }
		Name  string
	}
	if err := json.Unmarshal(msgs[0], &got); err != nil || got.Type != "offer" || got.Offer.SDP != "x" || got.Name != "al\"ice\\\x01" {
		t.Errorf("relay round trip: %+v %v", got, err)
	}
}

// FuzzDecode checks Decode against encoding/json: it accepts exactly the valid JSON objects (within the depth
// limit), and the fields it reads agree with what encoding/json reads.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"login","name":"alice"}`,
		`{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1"}}`,
		`{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0},"name":"b"}`,
		`{"type":"leave","name":null,"reason":"declined"}`,
		`{"type":"users","query":"\u00e9","limit":20}`,
		`[1,"a",null,true,false,-0.5e-3]`,
		`{"type":"x",}`, `{"a":1 "b":2}`, `"\ud800"`, `Hello world`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			t.Skip("the WebSocket layer passes only valid UTF-8 text on")
		}
		var m Message
		err := Decode(data, &m)
		var any any
		validJSON := json.Unmarshal(data, &any) == nil
		if err == nil {
			if !validJSON {
				t.Fatalf("Decode accepted invalid JSON %q", data)
			}
			var ref struct {
				Type string `json:"type"`
				Name *string
			}
			if json.Unmarshal(data, &ref) == nil && ref.Type != string(m.Type) {
				t.Fatalf("type %q, encoding/json says %q", m.Type, ref.Type)
			}
			return
		}
		de := err.(*DecodeError)
		if de.Code == CodeInvalidJSON && validJSON && !strings.Contains(de.Message, "nested too deeply") {
			t.Fatalf("Decode called valid JSON %q invalid: %v", data, err)
		}
	})
}

func TestSpecial8(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			want := c == '"' || c == '\\' || c < 0x20
			if got := special8(binary.LittleEndian.Uint64(b)); got != want {
				t.Fatalf("byte %#x at %d: special8 = %v", c, pos, got)
			}
		}
	}
}

// BenchmarkDecodeOffer decodes an offer of about 2.7 KB of SDP, the size of a browser's.
func BenchmarkDecodeOffer(b *testing.B) {
	sdp := strings.Repeat(`a=candidate:1 1 udp 2122260223 192.168.1.7 54321 typ host generation 0 network-id 1\r\n`, 30)
	msg := []byte(`{"type":"offer","offer":{"type":"offer","sdp":"` + sdp + `"},"name":"bob"}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	var m Message
	for b.Loop() {
		if err := Decode(msg, &m); err != nil {
			b.Fatal(err)
		}
	}
}
