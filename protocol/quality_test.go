package protocol

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseQuality(t *testing.T) {
	q, err := ParseQuality([]byte(`{"phase":"connected","path":"relay","transport":"tls","iceMs":412.6,"rttMs":38,"lossPct":0.5,"future":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Quality{Phase: QualityConnected, Path: PathRelay, Transport: "tls", ICE: 412600 * time.Microsecond, RTT: 38 * time.Millisecond, Loss: 0.005}
	if q != want {
		t.Errorf("got %+v, want %+v", q, want)
	}
	q, err = ParseQuality([]byte(`{"phase":"failed","rttMs":null}`))
	if err != nil || q != (Quality{Phase: QualityFailed, ICE: -1, RTT: -1, Loss: -1}) {
		t.Errorf("a failed report: %+v, %v", q, err)
	}
	_, err = ParseQuality([]byte(`{"phase":"ended"}`))
	if de, ok := err.(*DecodeError); !ok || de.Code != CodeInvalidMessage || de.Type != TypeQuality {
		t.Errorf("a report without a path: %v", err)
	}
}

// FuzzParseQuality: whatever a client sends, ParseQuality answers without panicking, and what it accepts is
// within the bounds docs/protocol.md gives.
func FuzzParseQuality(f *testing.F) {
	for _, s := range []string{
		`{"phase":"connected","path":"direct","transport":"udp","iceMs":300,"rttMs":20,"lossPct":0}`,
		`{"phase":"failed"}`, `{"phase":"ended","path":"relay","lossPct":100,"rttMs":60000,"iceMs":300000}`,
		`{"phase":"ended","path":"relay","lossPct":1e2,"rttMs":-0,"iceMs":1E-300}`, `[]`, `{"phase":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, err := ParseQuality(raw)
		if err != nil {
			if de, ok := err.(*DecodeError); !ok || de.Code != CodeInvalidMessage || de.Type != TypeQuality {
				t.Fatalf("error %#v", err)
			}
			return
		}
		// Accepted: a JSON object within the size (a field tandem does not read may hold any valid JSON value,
		// such as a number no float64 holds).
		var obj map[string]json.RawMessage
		if len(raw) > MaxQualitySize || json.Unmarshal(raw, &obj) != nil || obj == nil {
			t.Fatalf("accepted %q", raw)
		}
		switch {
		case q.Phase != QualityConnected && q.Phase != QualityEnded && q.Phase != QualityFailed,
			q.Path != PathDirect && q.Path != PathRelay && (q.Path != "" || q.Phase != QualityFailed),
			q.Transport != "" && q.Transport != "udp" && q.Transport != "tcp" && q.Transport != "tls",
			q.ICE < -1 || q.ICE > 5*time.Minute, q.RTT < -1 || q.RTT > time.Minute,
			q.Loss != -1 && (q.Loss < 0 || q.Loss > 1):
			t.Fatalf("%q accepted as %+v", raw, q)
		}
	})
}
