package hub

import (
	"errors"

	"tandem/protocol"
)

// CallEvents is told about calls as the hub sees them: a call rings, is answered, ends; an offer is refused as
// busy. It is how calls get logged and counted (package calllog) without the hub knowing how. Its methods, and
// those of the Call it returns, are called with the hub's lock held, except Call.Report: they must be quick, must
// not block and must not call the Hub. Names are the users' names as the hub knows them.
type CallEvents interface {
	// Started is told that caller's offer reached callee and a new call rings; echo says that callee is the echo
	// test user. What it returns stands for the call in the events that follow.
	Started(caller, callee string, echo bool) Call
	// Busy is told that caller's offer to callee was refused because callee is in another call (or, for the echo
	// test user, has all the test calls it takes).
	Busy(caller, callee string, echo bool)
}

// Call is one call, as returned by CallEvents.Started.
type Call interface {
	// Answered is told that the callee accepted the call (its answer, or its own offer back).
	Answered()
	// Ended is told that the call is over: by is the name of the user who ended it ("" for the server), reason
	// the leave reason the other party is given (protocol.Reason*).
	Ended(by, reason string)
	// Report takes a quality report from user by about its call with peer (Call.Report is called without the
	// hub's lock). A report it refuses returns a *ReportError, which the client is given.
	Report(by, peer string, q protocol.Quality) error
}

// ReportError refuses a quality report: Code is the error code the client gets (protocol.CodeNotInCall,
// protocol.CodeRateLimited), Message says why.
type ReportError struct {
	Code, Message string
}

func (e *ReportError) Error() string { return e.Message }

// The hooks below are the hub's only contact with CallEvents: one call each where a call starts, is answered and
// ends. Each call's Call is kept by its caller's session, and by its callee's unless the callee is the echo user
// (which is in many calls at once and keeps its callers instead).

// callOfLocked returns the Call of the call between s and t (see endCallLocked), or nil.
func callOfLocked(s, t *Session) Call {
	if s.peer == t {
		return s.record
	}
	return t.record
}

// callStartedLocked: s's offer started a call with t.
func (s *Session) callStartedLocked(t *Session) {
	h := s.hub
	if h.cfg.Calls == nil {
		return
	}
	echo := h.isEchoLocked(t)
	s.record = h.cfg.Calls.Started(s.name, t.name, echo)
	if !echo {
		t.record = s.record
	}
}

// callAnsweredLocked: s accepted the call from t, which rang.
func (s *Session) callAnsweredLocked(t *Session) {
	if c := callOfLocked(s, t); c != nil {
		c.Answered()
	}
}

// callEndedLocked: the call between s and t ends, ended by the user named by ("" for the server) with reason.
// It must come before endCallLocked, which forgets who was in a call with whom.
func (s *Session) callEndedLocked(t *Session, by, reason string) {
	if c := callOfLocked(s, t); c != nil {
		c.Ended(by, reason)
	}
}

// callRefusedLocked: s's offer to t (nil when not online) was refused with code (or the code of refused).
func (s *Session) callRefusedLocked(t *Session, code, refused string) {
	h := s.hub
	if h.cfg.Calls != nil && t != nil && (code == protocol.CodeBusy || refused == protocol.CodeBusy) {
		h.cfg.Calls.Busy(s.name, t.name, h.isEchoLocked(t))
	}
}

// closeReasonLocked is the leave reason given to the peers of s when its login ends: its connection closed, or it
// logged in again under another name.
func (s *Session) closeReasonLocked() string {
	if s.gone {
		return protocol.ReasonDisconnected
	}
	return protocol.ReasonRenamed
}

// quality takes a quality report (protocol.Quality) about the sender's call with m.Name, the call it is in or
// has just left. It is checked and handed to the call's Call; it is never relayed, and nothing is sent back unless
// it is refused.
func (s *Session) quality(m *protocol.Message) {
	h := s.hub
	if m.Quality == nil {
		s.fail(protocol.CodeInvalidMessage, `a quality message needs a "quality" object`, protocol.TypeQuality, "")
		return
	}
	if !m.HasName {
		s.fail(protocol.CodeInvalidMessage, `a quality message needs the "name" of the user the call was with`, protocol.TypeQuality, "")
		return
	}
	q, err := protocol.ParseQuality(m.Quality)
	if err != nil {
		s.fail(protocol.CodeInvalidMessage, err.Error(), protocol.TypeQuality, "")
		return
	}
	h.mu.Lock()
	name, c := s.name, s.record
	h.mu.Unlock()
	peer := string(m.Name)
	switch {
	case name == "":
		s.callFailed(protocol.CodeNotLoggedIn, protocol.TypeQuality, peer)
		return
	case c == nil:
		if h.cfg.Calls != nil { // without CallEvents the hub keeps no calls: the report is checked, then dropped
			s.callFailed(protocol.CodeNotInCall, protocol.TypeQuality, peer)
		}
		return
	}
	if err := c.Report(name, peer, q); err != nil {
		var re *ReportError
		if !errors.As(err, &re) {
			re = &ReportError{Code: protocol.CodeInternal, Message: err.Error()}
		}
		s.refuse(refusal{re.Code, re.Message, -1}, protocol.TypeQuality, peer)
	}
}
