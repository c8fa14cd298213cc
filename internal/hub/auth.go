package hub

import (
	"crypto/subtle"

	"tandem/protocol"
)

// Authenticator checks the credentials of logins (Config.Auth; internal/auth implements it).
type Authenticator interface {
	// CheckLogin is called on the session's reader for each login but the echo peer's. It answers by calling
	// s.FinishLogin exactly once: before it returns, or later from another goroutine. In the second case the
	// connection's reading must be paused meanwhile (internal/auth pauses it, as a cluster round trip does), so
	// that the session's events still come one at a time and in order.
	CheckLogin(s *Session, req *LoginRequest)
}

// LoginRequest is a login as Config.Auth sees it. It holds copies: it may be kept after CheckLogin returns.
type LoginRequest struct {
	Conn Conn // the connection, as given to Connect

	Name    string // the name asked for, valid; "" when the login named none
	Token   []byte // the resume token sent, if any
	Current string // the name the session is logged in under, or "" (a login on a logged-in session renames it)
	// Resume says the name is held by another connection whose resume token this login carries: it proves it is
	// the same user (a resume token is handed only to a user who got in).
	Resume bool

	Password, Invite, JWT, Device string // the credentials sent (docs/access.md); "" for those absent
}

// LoginVerdict is Config.Auth's answer to a login.
type LoginVerdict struct {
	// Code refuses the login (protocol.CodeUnauthorized and the others) with Message; RetryAfter, when it is
	// not negative, says in seconds when to try again. An empty Code lets the login in.
	Code       string
	Message    string
	RetryAfter int
	// Name is the name to log in as (when the credential fixes it, it may differ from the one asked for).
	Name string
	// Device is a device credential to hand out in the login reply, or "".
	Device string
}

// echoLogin reports whether m is the echo peer's login: the reserved echo name with the echo token.
func (h *Hub) echoLogin(m *protocol.Message) bool {
	return h.cfg.EchoToken != "" && m.HasName && string(m.Name) == h.cfg.EchoName &&
		subtle.ConstantTimeCompare(m.Token, []byte(h.cfg.EchoToken)) == 1
}

// checkLogin hands a login to the Authenticator.
func (s *Session) checkLogin(a Authenticator, m *protocol.Message) {
	req := &LoginRequest{Token: clone(m.Token), Password: string(m.Password), Invite: string(m.Invite),
		JWT: string(m.JWT), Device: string(m.Device)}
	if m.HasName {
		name, err := protocol.ValidateName(m.Name)
		if err != nil {
			s.loginFailed(protocol.CodeInvalidName, err.Error())
			return
		}
		req.Name = name
	}
	h := s.hub
	s.lockHub()
	req.Conn, req.Current = s.conn, s.name
	if other := h.users[req.Name]; other != nil && other != s && len(req.Token) > 0 {
		req.Resume = subtle.ConstantTimeCompare(req.Token, []byte(other.token)) == 1
	}
	s.unlockHub()
	a.CheckLogin(s, req)
}

// FinishLogin ends a login that Config.Auth checked: refused as v says, or logged in under v.Name. It reports
// whether the session is logged in (in a cluster, whether the login went on to the shared state, which may still
// refuse the name).
func (s *Session) FinishLogin(req *LoginRequest, v LoginVerdict) bool {
	switch {
	case v.Code != "":
		s.hub.m.loginsFailed.Inc()
		s.hub.m.errors(v.Code).Inc()
		s.reply(func(b []byte) []byte { return protocol.AppendLoginRefused(b, v.Code, v.Message, v.RetryAfter) })
		return false
	case v.Name == "":
		s.loginFailed(protocol.CodeInvalidName, "a login needs a name")
		return false
	}
	return s.loginAs(v.Name, req.Token, v.Device)
}

// loggedIn reports whether s is logged in.
func (s *Session) loggedIn() bool {
	s.lockHub()
	defer s.unlockHub()
	return s.name != ""
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
