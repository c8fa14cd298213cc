package protocol

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// A quality message is a client's report on the call it is in, or has just left: how the call connected (directly
// or through a TURN relay, over UDP or TCP), how long ICE took, and the round-trip time and packet loss it saw.
// It is optional (a client that never sends one loses nothing) and goes to the server only, never to the other
// party:
//
//	{"type":"quality","name":"bob","quality":{"phase":"connected","path":"relay","transport":"udp","iceMs":412,"rttMs":38,"lossPct":0.4}}

// Phases of a quality report.
const (
	QualityConnected = "connected" // the call's media just connected
	QualityEnded     = "ended"     // the call is over; the figures are for the whole call
	QualityFailed    = "failed"    // ICE failed: the call never connected, or lost its connection for good
)

// Paths and transports of a quality report.
const (
	PathDirect = "direct" // the selected candidate pair has no relay candidate
	PathRelay  = "relay"  // one end of the selected pair is a TURN relay
)

// Bounds of a quality report.
const (
	MaxQualitySize = 512    // bytes of the report object
	maxQualityICEs = 300000 // iceMs: 5 minutes
	maxQualityRTTs = 60000  // rttMs: a minute
)

// Quality is a checked quality report. A figure the client did not send is negative.
type Quality struct {
	Phase     string        // QualityConnected, QualityEnded or QualityFailed
	Path      string        // PathDirect or PathRelay; "" when not sent (allowed for QualityFailed only)
	Transport string        // "udp", "tcp" or "tls" (a relay reached over TLS); "" when not sent
	ICE       time.Duration // how long ICE took to connect
	RTT       time.Duration // the round-trip time of the selected candidate pair
	Loss      float64       // the share of packets lost, from 0 to 1
}

// ParseQuality checks the report object of a quality message (Message.Quality). An error is a *DecodeError
// (invalid_message) whose message names the field at fault. Unknown fields are ignored; a null field is as if
// absent.
func ParseQuality(raw []byte) (Quality, error) {
	q := Quality{ICE: -1, RTT: -1, Loss: -1}
	bad := func(msg string) (Quality, error) {
		return Quality{}, &DecodeError{Code: CodeInvalidMessage, Message: msg, Type: TypeQuality}
	}
	if len(raw) > MaxQualitySize {
		return bad("a quality report is at most " + strconv.Itoa(MaxQualitySize) + " bytes")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return bad("\"quality\" must be an object")
	}
	str := func(key string, allowed ...string) (string, bool) {
		v, ok := fields[key]
		if !ok || bytes.Equal(v, []byte("null")) {
			return "", true
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		for _, a := range allowed {
			if s == a {
				return s, true
			}
		}
		return "", false
	}
	num := func(key string, limit float64) (float64, bool) {
		v, ok := fields[key]
		if !ok || bytes.Equal(v, []byte("null")) {
			return -1, true
		}
		var f float64
		if json.Unmarshal(v, &f) != nil || math.IsNaN(f) || f < 0 || f > limit {
			return 0, false
		}
		return f, true
	}
	var ok bool
	if q.Phase, ok = str("phase", QualityConnected, QualityEnded, QualityFailed); !ok || q.Phase == "" {
		return bad(`field "phase" must be "connected", "ended" or "failed"`)
	}
	if q.Path, ok = str("path", PathDirect, PathRelay); !ok {
		return bad(`field "path" must be "direct" or "relay"`)
	}
	if q.Path == "" && q.Phase != QualityFailed {
		return bad(`a quality report of a call that connected needs "path": "direct" or "relay"`)
	}
	if q.Transport, ok = str("transport", "udp", "tcp", "tls"); !ok {
		return bad(`field "transport" must be "udp", "tcp" or "tls"`)
	}
	ice, ok := num("iceMs", maxQualityICEs)
	if !ok {
		return bad(`field "iceMs" must be a number of milliseconds from 0 to ` + strconv.Itoa(maxQualityICEs))
	}
	rtt, ok := num("rttMs", maxQualityRTTs)
	if !ok {
		return bad(`field "rttMs" must be a number of milliseconds from 0 to ` + strconv.Itoa(maxQualityRTTs))
	}
	if q.Loss, ok = num("lossPct", 100); !ok {
		return bad(`field "lossPct" must be a percentage from 0 to 100`)
	}
	if ice >= 0 {
		q.ICE = time.Duration(ice * float64(time.Millisecond))
	}
	if rtt >= 0 {
		q.RTT = time.Duration(rtt * float64(time.Millisecond))
	}
	if q.Loss >= 0 {
		q.Loss /= 100
	}
	return q, nil
}
