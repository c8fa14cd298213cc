package protocol

import (
	"strconv"
	"unicode/utf8"
)

// The Append functions write one server message to dst and return the extended slice. They allocate nothing
// beyond growing dst, so a caller can reuse one buffer for many messages.

// AppendRelay writes a relayed offer, answer or candidate: {"type":T,"T":payload,"name":from}.
// The payload is copied through byte for byte.
func AppendRelay(dst []byte, typ string, payload []byte, from string) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","`...)
	dst = append(dst, typ...)
	dst = append(dst, `":`...)
	if len(payload) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, payload...)
	}
	dst = append(dst, `,"name":`...)
	dst = AppendString(dst, from)
	return append(dst, '}')
}

// AppendLeave writes {"type":"leave","name":from,"reason":reason}.
func AppendLeave(dst []byte, from, reason string) []byte {
	dst = append(dst, `{"type":"leave","name":`...)
	dst = AppendString(dst, from)
	dst = append(dst, `,"reason":`...)
	dst = AppendString(dst, reason)
	return append(dst, '}')
}

// AppendRinging writes {"type":"ringing","name":callee}.
func AppendRinging(dst []byte, callee string) []byte {
	dst = append(dst, `{"type":"ringing","name":`...)
	dst = AppendString(dst, callee)
	return append(dst, '}')
}

// AppendMissed writes {"type":"missed","name":caller}: caller called while the user was in another call.
func AppendMissed(dst []byte, caller string) []byte {
	dst = append(dst, `{"type":"missed","name":`...)
	dst = AppendString(dst, caller)
	return append(dst, '}')
}

// AppendError writes an error message. request (the type of the message refused) and name are left out when
// empty.
func AppendError(dst []byte, code, message, request, name string) []byte {
	return appendError(dst, code, message, request, name, -1)
}

// AppendRetryError writes an error message that also says, in whole seconds, how long to wait before the request
// can succeed: {"type":"error","code":code,...,"retryAfter":seconds}.
func AppendRetryError(dst []byte, code, message, request, name string, retryAfter int) []byte {
	return appendError(dst, code, message, request, name, max(retryAfter, 0))
}

func appendError(dst []byte, code, message, request, name string, retryAfter int) []byte {
	dst = append(dst, `{"type":"error","code":"`...)
	dst = append(dst, code...)
	dst = append(dst, `","message":`...)
	dst = AppendString(dst, message)
	if request != "" {
		dst = append(dst, `,"request":`...)
		dst = AppendString(dst, request)
	}
	if name != "" {
		dst = append(dst, `,"name":`...)
		dst = AppendString(dst, name)
	}
	if retryAfter >= 0 {
		dst = append(dst, `,"retryAfter":`...)
		dst = strconv.AppendInt(dst, int64(retryAfter), 10)
	}
	return append(dst, '}')
}

// LoginOK is what a successful login reply carries.
type LoginOK struct {
	Name       string
	Token      string
	Peer       string      // the peer of a resumed session in a call, or ""
	Echo       string      // the name of the echo test user when it is online, or ""
	ICEServers []ICEServer // may be nil
	Device     string      // a device credential for later logins (docs/access.md), or ""
}

// AppendLoginOK writes a successful login reply.
func AppendLoginOK(dst []byte, r LoginOK) []byte {
	dst = append(dst, `{"type":"login","success":true,"name":`...)
	dst = AppendString(dst, r.Name)
	dst = append(dst, `,"token":`...)
	dst = AppendString(dst, r.Token)
	if r.Peer != "" {
		dst = append(dst, `,"peer":`...)
		dst = AppendString(dst, r.Peer)
	}
	if r.Echo != "" {
		dst = append(dst, `,"echo":`...)
		dst = AppendString(dst, r.Echo)
	}
	if r.ICEServers != nil {
		dst = append(dst, `,"iceServers":[`...)
		for i, s := range r.ICEServers {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"urls":[`...)
			for j, u := range s.URLs {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = AppendString(dst, u)
			}
			dst = append(dst, ']')
			if s.Username != "" {
				dst = append(dst, `,"username":`...)
				dst = AppendString(dst, s.Username)
			}
			if s.Credential != "" {
				dst = append(dst, `,"credential":`...)
				dst = AppendString(dst, s.Credential)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if r.Device != "" {
		dst = append(dst, `,"device":`...)
		dst = AppendString(dst, r.Device)
	}
	return append(dst, '}')
}

// AppendLoginFailed writes {"type":"login","success":false,"code":code,"message":message}.
func AppendLoginFailed(dst []byte, code, message string) []byte {
	return AppendLoginRefused(dst, code, message, -1)
}

// AppendLoginRefused writes a failed login reply that also says, in whole seconds, when to try again, unless
// retryAfter is negative: {"type":"login","success":false,"code":code,"message":message,"retryAfter":seconds}.
func AppendLoginRefused(dst []byte, code, message string, retryAfter int) []byte {
	dst = append(dst, `{"type":"login","success":false,"code":"`...)
	dst = append(dst, code...)
	dst = append(dst, `","message":`...)
	dst = AppendString(dst, message)
	if retryAfter >= 0 {
		dst = append(dst, `,"retryAfter":`...)
		dst = strconv.AppendInt(dst, int64(retryAfter), 10)
	}
	return append(dst, '}')
}

// User is one entry of a users reply.
type User struct {
	Name string `json:"name"`
	Busy bool   `json:"busy"`
	Echo bool   `json:"echo,omitempty"`
}

// AppendUsers writes a users reply.
func AppendUsers(dst []byte, query string, users []User, more bool, total int) []byte {
	return AppendUsersList(dst, UsersList{Query: query, Users: users, More: more, Total: total})
}

// UsersList is a users message: a reply, or an update pushed to a client watching the list.
type UsersList struct {
	Query string
	Users []User
	More  bool
	Total int
	// Watching, in a reply to a request with "watch": true, says that the server will push updates (absent: it
	// will not, and the client asks again when it needs to).
	Watching bool
	// Update marks a message the server pushed (not a reply to a request).
	Update bool
}

// AppendUsersList writes a users message.
func AppendUsersList(dst []byte, l UsersList) []byte {
	query, users, more, total := l.Query, l.Users, l.More, l.Total
	dst = append(dst, `{"type":"users","query":`...)
	dst = AppendString(dst, query)
	dst = append(dst, `,"users":[`...)
	for i, u := range users {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = AppendString(dst, u.Name)
		dst = append(dst, `,"busy":`...)
		dst = strconv.AppendBool(dst, u.Busy)
		if u.Echo {
			dst = append(dst, `,"echo":true`...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `],"more":`...)
	dst = strconv.AppendBool(dst, more)
	dst = append(dst, `,"total":`...)
	dst = strconv.AppendInt(dst, int64(total), 10)
	if l.Watching {
		dst = append(dst, `,"watching":true`...)
	}
	if l.Update {
		dst = append(dst, `,"update":true`...)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString writes s as a JSON string literal. Invalid UTF-8 becomes U+FFFD; U+2028 and U+2029 are escaped so
// the text is also valid JavaScript.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029': // valid JSON, but not valid JavaScript in older engines
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
