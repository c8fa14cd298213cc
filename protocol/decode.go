package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// Message is one message from a client, decoded just far enough to route it. The byte slices point into the
// frame it was decoded from (or, for strings with escapes, into fresh copies) and are valid only as long as the
// frame is. Payloads (Offer, Answer, Candidate) are the raw JSON text, to be passed through untouched.
type Message struct {
	Type      []byte
	Name      []byte // the user the message is for (login: the name wanted)
	HasName   bool
	Token     []byte // login: the resume token
	Password  []byte // login: the server's password, or the account's (docs/access.md)
	Invite    []byte // login: the secret of an invite link
	JWT       []byte // login: a token from the operator's app
	Device    []byte // login: the device credential an earlier login reply gave
	Reason    []byte // leave: why
	Query     []byte // users: the name prefix
	Limit     int    // users: how many at most; 0 when absent
	Watch     bool   // users: keep the list up to date (pushed updates)
	HasWatch  bool   // users: "watch" was given (true or false; false ends a watch)
	Offer     []byte
	Answer    []byte
	Candidate []byte
	Quality   []byte // quality: the report object, raw (ParseQuality reads it)
	Missed    bool   // login: the client wants "missed" messages (who called while it was busy)
}

// DecodeError says why a frame is not a usable message. Code is CodeInvalidJSON or CodeInvalidMessage.
type DecodeError struct {
	Code    string
	Message string
	Type    string // the message's type, when it could be read
}

func (e *DecodeError) Error() string { return e.Message }

// maxDepth bounds the nesting of arrays and objects in a message.
const maxDepth = 64

// Decode reads one client message, which must be valid UTF-8 (the WebSocket layer checks text frames). It validates the whole frame as JSON (it is relayed byte for byte, so it must
// be), requires a JSON object with a string "type", and type-checks the fields tandem reads. Unknown fields are
// ignored. A field given more than once takes its last value, as JSON.parse does.
func Decode(data []byte, m *Message) error {
	*m = Message{}
	s := scanner{data: data}
	s.skipSpace()
	if s.pos >= len(data) {
		return &DecodeError{Code: CodeInvalidJSON, Message: "invalid JSON: empty message"}
	}
	// Walk the message, remembering the top-level fields that matter.
	var typeErr *DecodeError
	isObject := data[s.pos] == '{'
	var err error
	if isObject {
		err = s.object(1, func(key []byte, escaped bool, raw []byte, kind byte) {
			if e := m.field(key, escaped, raw, kind); e != nil && typeErr == nil {
				typeErr = e
			}
		})
	} else {
		_, err = s.value(0)
	}
	if err != nil {
		return invalidJSON(err)
	}
	if s.skipSpace(); s.pos != len(data) {
		return invalidJSON(s.errorf("unexpected data after the JSON value"))
	}
	if !isObject {
		return &DecodeError{Code: CodeInvalidMessage, Message: "a message must be a JSON object with a \"type\""}
	}
	if m.Type == nil {
		if typeErr != nil && typeErr.Message == fieldTypeMessage("type", "a string") {
			return typeErr
		}
		return &DecodeError{Code: CodeInvalidMessage, Message: "a message must have a string field \"type\""}
	}
	if typeErr != nil {
		typeErr.Type = string(m.Type)
		return typeErr
	}
	return nil
}

func invalidJSON(err error) *DecodeError {
	return &DecodeError{Code: CodeInvalidJSON, Message: "invalid JSON: " + err.Error()}
}

func fieldTypeMessage(field, want string) string {
	return fmt.Sprintf("field %q must be %s", field, want)
}

// field records one top-level field. key is the raw key text without quotes; escaped says it held escapes.
func (m *Message) field(key []byte, escaped bool, raw []byte, kind byte) *DecodeError {
	if escaped {
		var k string
		if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k) != nil {
			return nil
		}
		key = []byte(k)
	}
	wrong := func(want string) *DecodeError {
		return &DecodeError{Code: CodeInvalidMessage, Message: fieldTypeMessage(string(key), want)}
	}
	str := func(dst *[]byte) *DecodeError {
		switch kind {
		case '"':
			*dst = unquote(raw)
			return nil
		case 'n': // null: as if absent
			*dst = nil
			return nil
		}
		*dst = nil
		return wrong("a string")
	}
	switch string(key) {
	case "type":
		if kind != '"' {
			m.Type = nil
			return wrong("a string")
		}
		m.Type = unquote(raw)
	case "name":
		e := str(&m.Name)
		m.HasName = m.Name != nil
		return e
	case "token":
		return str(&m.Token)
	case "password":
		return str(&m.Password)
	case "invite":
		return str(&m.Invite)
	case "jwt":
		return str(&m.JWT)
	case "device":
		return str(&m.Device)
	case "reason":
		return str(&m.Reason)
	case "query":
		return str(&m.Query)
	case "limit":
		if kind == 'n' {
			m.Limit = 0
			return nil
		}
		var n int
		if kind != '0' || json.Unmarshal(raw, &n) != nil {
			return wrong("a whole number")
		}
		m.Limit = n
	case "watch":
		m.Watch, m.HasWatch = kind == 't', kind == 't' || kind == 'f'
		if kind != 't' && kind != 'f' && kind != 'n' {
			return wrong("true or false")
		}
	case "offer", "answer":
		if kind != '{' {
			return wrong("an object (an RTCSessionDescription)")
		}
		if key[0] == 'o' {
			m.Offer = raw
		} else {
			m.Answer = raw
		}
	case "quality":
		if kind != '{' {
			return wrong("an object (a call quality report)")
		}
		m.Quality = raw
	case "missed":
		switch kind {
		case 't', 'f', 'n':
			m.Missed = kind == 't'
		default:
			m.Missed = false
			return wrong("true or false")
		}
	case "candidate":
		if kind != '{' && kind != 'n' {
			return wrong("an object (an RTCIceCandidate) or null")
		}
		m.Candidate = raw
	}
	return nil
}

// unquote returns the content of a JSON string literal. Without escapes it is a sub-slice, with no copy.
func unquote(raw []byte) []byte {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		if inner == nil {
			return []byte{}
		}
		return inner
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return inner
	}
	return []byte(s)
}

// scanner validates JSON text without building anything.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf(format+" at offset %d", append(args, s.pos)...)
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value skips one JSON value and returns its kind: '{', '[', '"', '0' (number), 't', 'f' or 'n'.
func (s *scanner) value(depth int) (byte, error) {
	switch c := s.peek(); c {
	case '{':
		return c, s.object(depth+1, nil)
	case '[':
		return c, s.array(depth + 1)
	case '"':
		_, _, _, err := s.str()
		return c, err
	case 't':
		return c, s.literal("true")
	case 'f':
		return c, s.literal("false")
	case 'n':
		return c, s.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return '0', s.number()
		}
		if s.pos >= len(s.data) {
			return 0, s.errorf("unexpected end")
		}
		return 0, s.errorf("unexpected character %q", c)
	}
}

func (s *scanner) literal(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.errorf("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

// object skips an object. If field is not nil it is called for each member: the key's text without its quotes
// (escaped says it holds escapes), the value's raw text and its kind (see value).
func (s *scanner) object(depth int, field func(key []byte, escaped bool, raw []byte, kind byte)) error {
	if empty, err := s.open(depth, '}'); empty || err != nil {
		return err
	}
	for {
		s.skipSpace()
		if s.peek() != '"' {
			return s.errorf("expected a field name")
		}
		ks, ke, escaped, err := s.str()
		if err != nil {
			return err
		}
		s.skipSpace()
		if s.peek() != ':' {
			return s.errorf("expected ':' after a field name")
		}
		s.pos++
		s.skipSpace()
		vs := s.pos
		kind, err := s.value(depth)
		if err != nil {
			return err
		}
		if field != nil {
			field(s.data[ks+1:ke-1], escaped, s.data[vs:s.pos], kind)
		}
		if ended, ok := s.next('}'); !ok {
			return s.errorf("expected ',' or '}' in an object")
		} else if ended {
			return nil
		}
	}
}

func (s *scanner) array(depth int) error {
	if empty, err := s.open(depth, ']'); empty || err != nil {
		return err
	}
	for {
		s.skipSpace()
		if _, err := s.value(depth); err != nil {
			return err
		}
		if ended, ok := s.next(']'); !ok {
			return s.errorf("expected ',' or ']' in an array")
		} else if ended {
			return nil
		}
	}
}

// open enters an object or an array (s is at its '{' or '['), which end closes, and reports whether it is empty:
// then it has been left already.
func (s *scanner) open(depth int, end byte) (empty bool, err error) {
	if depth > maxDepth {
		return false, s.errorf("nested too deeply")
	}
	s.pos++
	s.skipSpace()
	if s.peek() == end {
		s.pos++
		return true, nil
	}
	return false, nil
}

// next passes the ',' after a member of an object or an array, or end, its end, and reports whether that ended
// it; ok is false when neither is there.
func (s *scanner) next(end byte) (ended, ok bool) {
	s.skipSpace()
	c := s.peek()
	if c != end && c != ',' {
		return false, false
	}
	s.pos++
	return c == end, true
}

// str skips a string literal; start and end bound it, quotes included.
func (s *scanner) str() (start, end int, escaped bool, err error) {
	start = s.pos
	s.pos++ // "
	d := s.data
	for {
		// Fast path over plain characters: eight at a time, then one at a time.
		i := s.pos
		for i+8 <= len(d) && !special8(binary.LittleEndian.Uint64(d[i:])) {
			i += 8
		}
		for i < len(d) && d[i] != '"' && d[i] != '\\' && d[i] >= 0x20 {
			i++
		}
		s.pos = i
		if i >= len(d) {
			return 0, 0, false, s.errorf("unterminated string")
		}
		switch c := d[i]; {
		case c == '"':
			s.pos++
			return start, s.pos, escaped, nil
		case c < 0x20:
			return 0, 0, false, s.errorf("control character in a string")
		default: // backslash
			escaped = true
			if i+1 >= len(d) {
				return 0, 0, false, s.errorf("unterminated string")
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos = i + 2
			case 'u':
				if i+6 > len(d) {
					return 0, 0, false, s.errorf("invalid escape")
				}
				for _, h := range d[i+2 : i+6] {
					if !isHex(h) {
						return 0, 0, false, s.errorf("invalid escape")
					}
				}
				s.pos = i + 6
			default:
				return 0, 0, false, s.errorf("invalid escape")
			}
		}
	}
}

// special8 reports whether any of the eight bytes in x ends a plain run of string text: a quote, a backslash or
// a control character. (Bytes of multi-byte UTF-8 characters are all 0x80 or above and are plain.)
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	control := (x - ones*0x20) &^ x & highs
	q := x ^ (ones * '"')
	quote := (q - ones) &^ q & highs
	b := x ^ (ones * '\\')
	backslash := (b - ones) &^ b & highs
	return control|quote|backslash != 0
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (s *scanner) number() error {
	d := s.data
	i := s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		i = digits(d, i)
	default:
		s.pos = i
		return s.errorf("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		j := i + 1
		if i = digits(d, j); i == j {
			s.pos = i
			return s.errorf("invalid number")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		if i = digits(d, i); i == j {
			s.pos = i
			return s.errorf("invalid number")
		}
	}
	s.pos = i
	return nil
}

// digits returns where the run of decimal digits at d[i:] ends.
func digits(d []byte, i int) int {
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		i++
	}
	return i
}
