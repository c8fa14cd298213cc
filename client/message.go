package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/go-json-experiment/json/jsontext"

	"tandem/protocol"
)

// Message is one message received from the server, whatever its type. Fields that a message does not carry are
// left at their zero values. The payloads (Offer, Answer, Candidate) are the raw JSON the other user sent, passed
// through untouched by the server: an RTCSessionDescription ({"type":"offer","sdp":"..."}) or an RTCIceCandidate
// ({"candidate":"...","sdpMid":"0","sdpMLineIndex":0}); Candidate is the JSON null for the end of candidates.
type Message struct {
	Type    string // one of the protocol.Type constants, or whatever the server sent
	Name    string // login: the name registered; offer, answer, candidate, leave: the other user; error: the user concerned
	Success bool   // login: whether it succeeded
	Code    string // error and failed login: the protocol error code
	Message string // error and failed login: a text a person can read
	Request string // error: the type of the message refused
	Reason  string // leave: why (protocol.ReasonHangup...)
	Token   string // login: the resume token
	Peer    string // login: the peer of a resumed session that is in a call
	Echo    string // login: the name of the echo test user, when it is online
	Device  string // login: a device credential for later logins to a server that checks who logs in

	ICEServers []protocol.ICEServer // login: the STUN/TURN servers to use
	RetryAfter int                  // error (cooldown), failed login (rate_limited, server_busy): seconds to wait before trying again

	Offer     json.RawMessage // offer
	Answer    json.RawMessage // answer
	Candidate json.RawMessage // candidate

	Users []User // users: the page of the online list asked for
	Query string // users: the query answered
	More  bool   // users: whether the list was cut
	Total int    // users: how many users are online
	// Watching: in the reply to WatchUsers, the server will push the list again when it changes. Update: this
	// users message is such a push, not a reply.
	Watching bool
	Update   bool
}

// User is one entry of a users reply.
type User struct {
	Name string `json:"name"`
	Busy bool   `json:"busy,omitempty"`
	Echo bool   `json:"echo,omitempty"` // the built-in echo test user
}

// Err returns the message as an *Error if it is an error message or a failed login reply, and nil otherwise.
func (m *Message) Err() error {
	if m.Type == protocol.TypeError || (m.Type == protocol.TypeLogin && !m.Success) {
		return &Error{Code: m.Code, Message: m.Message, Request: m.Request, Name: m.Name}
	}
	return nil
}

var decoders = sync.Pool{New: func() any { return new(decoder) }}

type decoder struct {
	buf bytes.Buffer
	dec jsontext.Decoder
}

var decodeOptions = jsontext.AllowDuplicateNames(true)

// Decode decodes one message from data into m, which it resets first. m keeps no reference to data.
// The error is a *DecodeError when data is not a JSON object with a string type.
func Decode(data []byte, m *Message) error {
	*m = Message{}
	d := decoders.Get().(*decoder)
	d.buf.Reset()
	d.buf.Write(data)
	d.dec.Reset(&d.buf, decodeOptions)
	err := d.decode(m)
	d.dec.Reset(&d.buf) // drop references held by the decoder's state
	d.buf.Reset()
	if d.buf.Cap() <= 64<<10 {
		decoders.Put(d)
	}
	if err == nil && m.Type == "" {
		err = errors.New("no type")
	}
	if err != nil {
		if len(data) > 256 {
			data = data[:256]
		}
		return &DecodeError{Data: bytes.Clone(data), Err: err}
	}
	return nil
}

func (d *decoder) decode(m *Message) error {
	dec := &d.dec
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != '{' {
		return errors.New("not an object")
	}
	for dec.PeekKind() != '}' {
		key, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if bytes.IndexByte(key, '\\') >= 0 { // an escaped name: compare it unquoted
			unq, err := jsontext.AppendUnquote(nil, key)
			if err != nil {
				return err
			}
			key = jsontext.Value(`"` + string(unq) + `"`)
		}
		switch string(key) {
		case `"type"`:
			err = readType(dec, &m.Type)
		case `"name"`:
			err = readString(dec, &m.Name, false)
		case `"success"`:
			err = readBool(dec, &m.Success)
		case `"code"`:
			err = readString(dec, &m.Code, false)
		case `"message"`:
			err = readString(dec, &m.Message, false)
		case `"request"`:
			err = readString(dec, &m.Request, false)
		case `"retryAfter"`:
			err = readInt(dec, &m.RetryAfter)
		case `"reason"`:
			err = readString(dec, &m.Reason, false)
		case `"token"`:
			err = readString(dec, &m.Token, false)
		case `"peer"`:
			err = readString(dec, &m.Peer, false)
		case `"echo"`:
			err = readString(dec, &m.Echo, false)
		case `"device"`:
			err = readString(dec, &m.Device, false)
		case `"query"`:
			err = readString(dec, &m.Query, false)
		case `"more"`:
			err = readBool(dec, &m.More)
		case `"total"`:
			err = readInt(dec, &m.Total)
		case `"watching"`:
			err = readBool(dec, &m.Watching)
		case `"update"`:
			err = readBool(dec, &m.Update)
		case `"offer"`:
			m.Offer, err = readRaw(dec)
		case `"answer"`:
			m.Answer, err = readRaw(dec)
		case `"candidate"`:
			m.Candidate, err = readRaw(dec)
		case `"iceServers"`:
			err = readJSON(dec, &m.ICEServers)
		case `"users"`:
			err = readJSON(dec, &m.Users)
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return fmt.Errorf("field %s: %w", key, err)
		}
	}
	if _, err := dec.ReadToken(); err != nil { // the closing brace
		return err
	}
	if _, err := dec.ReadToken(); err == nil {
		return errors.New("data after the object")
	}
	return nil
}

var knownTypes = []string{
	protocol.TypeLogin, protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeLeave,
	protocol.TypeError, protocol.TypeUsers, protocol.TypeRinging,
}

// readType reads the type, which must be a string, without allocating for the known ones.
func readType(dec *jsontext.Decoder, s *string) error {
	if dec.PeekKind() == '"' {
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if len(v) >= 2 && bytes.IndexByte(v, '\\') < 0 {
			for _, t := range knownTypes {
				if string(v[1:len(v)-1]) == t {
					*s = t
					return nil
				}
			}
		}
		unq, err := jsontext.AppendUnquote(nil, v)
		if err != nil {
			return err
		}
		*s = string(unq)
		return nil
	}
	return readString(dec, s, true)
}

// readString reads a string into *s. A null is taken as absent, unless strict (the type must be a string).
func readString(dec *jsontext.Decoder, s *string, strict bool) error {
	if dec.PeekKind() == 'n' && !strict {
		_, err := dec.ReadToken()
		return err
	}
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != '"' {
		return fmt.Errorf("not a string but %v", tok.Kind())
	}
	*s = tok.String()
	return nil
}

func readBool(dec *jsontext.Decoder, b *bool) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case 't', 'f':
		*b = tok.Bool()
	case 'n':
	default:
		return fmt.Errorf("not a boolean but %v", tok.Kind())
	}
	return nil
}

func readInt(dec *jsontext.Decoder, n *int) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case '0':
		*n = int(tok.Int())
	case 'n':
	default:
		return fmt.Errorf("not a number but %v", tok.Kind())
	}
	return nil
}

// readRaw returns a copy of the next value, exactly as sent.
func readRaw(dec *jsontext.Decoder) (json.RawMessage, error) {
	v, err := dec.ReadValue()
	if err != nil {
		return nil, err
	}
	return json.RawMessage(bytes.Clone(v)), nil
}

// readJSON decodes the next value with encoding/json, for the rare fields with structure (login's iceServers,
// users' list).
func readJSON(dec *jsontext.Decoder, v any) error {
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}
