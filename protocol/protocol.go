// Package protocol defines tandem's wire messages: the tutorial's JSON signaling protocol and tandem's additions,
// with a fast decoder for incoming messages and encoders for outgoing ones. docs/protocol.md describes it in prose.
package protocol

// Message types. The first six are the tutorial's; the rest are tandem's own.
const (
	TypeLogin     = "login"
	TypeOffer     = "offer"
	TypeAnswer    = "answer"
	TypeCandidate = "candidate"
	TypeLeave     = "leave"
	TypeError     = "error"
	TypeUsers     = "users"
	TypeRinging   = "ringing"
	TypeQuality   = "quality" // a client's report on how its call connected (quality.go); never relayed
	// TypeMissed tells a user that someone called while they were in another call (and was answered busy); sent
	// only to logins that asked for it (Message.Missed).
	TypeMissed = "missed"
)

// Error codes, carried in the code field of error messages and failed login replies.
const (
	CodeInvalidJSON        = "invalid_json"
	CodeInvalidMessage     = "invalid_message"
	CodeUnknownType        = "unknown_type"
	CodeBinaryNotSupported = "binary_not_supported"
	CodeTooLarge           = "too_large"
	CodeRateLimited        = "rate_limited"
	CodeNotLoggedIn        = "not_logged_in"
	CodeNotOnline          = "not_online"
	CodeBusy               = "busy"
	CodeSelfCall           = "self_call"
	CodeNotInCall          = "not_in_call"
	CodeInvalidName        = "invalid_name"
	CodeNameTaken          = "name_taken"
	CodeNotAnswered        = "not_answered"
	CodeCooldown           = "cooldown"
	CodeInternal           = "internal"
	// Access control (docs/access.md): a login refused for its credentials, or because the server is too busy
	// checking others'.
	CodeAuthRequired = "auth_required"
	CodeUnauthorized = "unauthorized"
	CodeExpired      = "expired"
	CodeServerBusy   = "server_busy"
	// CodeUnavailable: in a cluster, what the request needed (the shared state, or another node) could not be
	// reached in time; nothing was done, and the client may try again.
	CodeUnavailable = "unavailable"
)

// Leave reasons. Clients may send the first four; the server sends the others.
const (
	ReasonHangup       = "hangup"
	ReasonDeclined     = "declined"
	ReasonNoAnswer     = "no_answer"
	ReasonCancelled    = "cancelled"
	ReasonDisconnected = "disconnected"
	ReasonRenamed      = "renamed"
	ReasonShutdown     = "shutdown"
)

// WebSocket close codes tandem uses beyond the standard ones.
const (
	// CloseReplaced closes a connection whose name was taken over by a new connection with the resume token.
	CloseReplaced = 4000
	// CloseNameConflict closes a connection whose name another connection holds now, in a cluster: its shared
	// state was lost and two users logged in under one name (the other one keeps it), or the shared state gives the
	// name to another session (a resume whose answer came too late), found by its node's cleanup pass.
	CloseNameConflict = 4001
	// CloseServiceRestart (the standard 1012) closes the connections of a cluster node that is being restarted:
	// the client reconnects, to another node, and resumes with its token.
	CloseServiceRestart = 1012
)

// ICEServer is one entry of RTCConfiguration.iceServers, as handed to clients in the login reply.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// MaxNameLength is the longest name allowed, in Unicode code points.
const MaxNameLength = 64
