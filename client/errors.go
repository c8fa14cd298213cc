package client

import (
	"errors"
	"fmt"

	"tandem/protocol"
)

// Error is an error reported by the server: an error message, or a failed login reply. Its Code is one of the
// protocol's error codes (protocol.CodeNameTaken and so on).
//
// Use errors.Is with the sentinels below to test for a code:
//
//	if errors.Is(err, client.ErrNameTaken) { ... }
type Error struct {
	Code    string // the protocol error code; may be empty for a server that sends none (the tutorial's)
	Message string // the text a person can read
	Request string // the type of the message refused, when the server says
	Name    string // the user concerned, when there is one
}

func (e *Error) Error() string {
	switch {
	case e.Code == "" && e.Message == "":
		return "tandem: refused"
	case e.Code == "":
		return "tandem: " + e.Message
	case e.Message == "":
		return "tandem: " + e.Code
	}
	return "tandem: " + e.Code + ": " + e.Message
}

// Is reports whether target is an *Error with the same code, so that the sentinels match any error of their code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is, one per protocol error code.
var (
	ErrInvalidJSON        = &Error{Code: protocol.CodeInvalidJSON}
	ErrInvalidMessage     = &Error{Code: protocol.CodeInvalidMessage}
	ErrUnknownType        = &Error{Code: protocol.CodeUnknownType}
	ErrBinaryNotSupported = &Error{Code: protocol.CodeBinaryNotSupported}
	ErrTooLarge           = &Error{Code: protocol.CodeTooLarge}
	ErrRateLimited        = &Error{Code: protocol.CodeRateLimited}
	ErrNotLoggedIn        = &Error{Code: protocol.CodeNotLoggedIn}
	ErrNotOnline          = &Error{Code: protocol.CodeNotOnline}
	ErrBusy               = &Error{Code: protocol.CodeBusy}
	ErrSelfCall           = &Error{Code: protocol.CodeSelfCall}
	ErrNotInCall          = &Error{Code: protocol.CodeNotInCall}
	ErrInvalidName        = &Error{Code: protocol.CodeInvalidName}
	ErrNameTaken          = &Error{Code: protocol.CodeNameTaken}
	ErrNotAnswered        = &Error{Code: protocol.CodeNotAnswered}
	ErrCooldown           = &Error{Code: protocol.CodeCooldown}
	ErrInternal           = &Error{Code: protocol.CodeInternal}
	ErrAuthRequired       = &Error{Code: protocol.CodeAuthRequired}
	ErrUnauthorized       = &Error{Code: protocol.CodeUnauthorized}
	ErrExpired            = &Error{Code: protocol.CodeExpired}
	ErrServerBusy         = &Error{Code: protocol.CodeServerBusy}
)

// CloseError reports that the connection was closed with a WebSocket close frame. Read returns it (wrapped) once
// the server has closed the connection.
type CloseError struct {
	Code   int    // the close code: 1000, 1001 (server shutting down), 1008, 1009, 4000 (replaced)...
	Reason string // the close reason the server gave
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("tandem: connection closed (%d)", e.Code)
	}
	return fmt.Sprintf("tandem: connection closed (%d %s)", e.Code, e.Reason)
}

// Is reports whether target is a *CloseError with the same code.
func (e *CloseError) Is(target error) bool {
	t, ok := target.(*CloseError)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is on the close codes a client may want to act on.
var (
	// ErrReplaced: the same name logged in from another connection with the resume token.
	ErrReplaced = &CloseError{Code: protocol.CloseReplaced}
	// ErrGoingAway: the server is shutting down.
	ErrGoingAway = &CloseError{Code: 1001}
)

// ErrClosed is returned by every method once Close has been called.
var ErrClosed = errors.New("tandem: client closed")

// DecodeError reports a frame from the server that is not a JSON object with a string type (the tutorial server's
// first frame, the plain text "Hello world", is one). The connection is still usable: Read may be called again.
type DecodeError struct {
	Data []byte // the frame, truncated to 256 bytes
	Err  error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("tandem: undecodable message %q: %v", e.Data, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }
