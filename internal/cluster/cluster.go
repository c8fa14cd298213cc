// Package cluster is what several tandem nodes share to act as one server: a Directory of who holds which name
// (with its resume token, its call and its place in the user list) and a Bus that carries a message to the one
// node holding its recipient. The hub (package hub) uses them only when it is given a Backend; without one it is
// a single node with everything in its own memory, as tandem always was.
//
// Two implementations: Memory, nodes in one process sharing one store (for tests: the same routing suite runs on
// it and on Redis), and the redis subpackage, for real clusters.
package cluster

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable is returned (wrapped) when the shared state cannot be reached in time. The operation may still
// have been done (its reply came too late, or was lost): a write that matters is undone, fenced by its session
// id, by whoever gave up on it (a Claim: Release), and a Backend's cleanup frees what is left over.
var ErrUnavailable = errors.New("cluster: the shared state is unavailable")

// Route says where a user is: the node holding its connection, and the login session there.
type Route struct {
	Node    string
	Session string
}

// Claim asks for a name for a login.
type Claim struct {
	Name     string // the name, as validated by the protocol
	Session  string // the new login's session id (unguessable, new for every login)
	Token    string // the resume token the client presented; "" for none
	NewToken string // the resume token the name gets if it is claimed afresh
	Caller   uint64 // the session's caller id (hub: what its callees know it by)
}

// Outcome is how a claim ended.
type Outcome uint8

// Outcomes of a claim.
const (
	Claimed Outcome = iota // the name was free: it is this session's now, with Claim.NewToken
	Resumed                // the name was held, and the token matched: this session takes it over
	Taken                  // the name is held by someone else
)

// ClaimResult is the answer to a claim.
type ClaimResult struct {
	Outcome Outcome
	Token   string // the name's resume token now
	// For Resumed: the session taken over, who it was in a call with ("" for none) and where that peer is, and
	// the caller id it had.
	Old       Route
	Peer      string
	PeerRoute Route
	Caller    uint64
}

// Entry is one user in a list.
type Entry struct {
	Name string
	Busy bool // in a call
}

// Directory is the state the nodes share. Every method may block on a network round trip: the hub calls them
// off its connections' reading paths, with a deadline in ctx. A record is changed only by the node and session
// holding it (the session id fences every write), so a late write from a session that lost its name is a no-op.
type Directory interface {
	// Claim takes a name for a login: afresh if it is free, or over from its holder if Token is the name's.
	Claim(ctx context.Context, c Claim) (ClaimResult, error)
	// Release frees name if session still holds it.
	Release(ctx context.Context, name, session string) error
	// SetPeer records who name (held by session) is in a call with, "" for nobody: the list shows it as busy,
	// and a resume on another node finds its call.
	SetPeer(ctx context.Context, name, session, peer string) error
	// Locate says where name is; false when it is not online.
	Locate(ctx context.Context, name string) (Route, bool, error)
	// List returns the users whose folded (lower-case) name starts with prefix, in the order of their folded
	// names (then names), at most limit of them, whether there are more, and how many users are online in all.
	List(ctx context.Context, prefix string, limit int) (list []Entry, more bool, total int, err error)
}

// PresenceVersioner is what a Backend may offer for live user lists: a counter of the shared state's changes
// that a list can show (a name claimed or freed, a busy flag changed). A node polls it and lists its watched
// queries again only when it moved, so the cost is per node, not per user. The counter may go back (the shared
// state was lost): only a different value means a change.
type PresenceVersioner interface {
	PresenceVersion(ctx context.Context) (uint64, error)
}

// Kind is what an Envelope carries.
type Kind uint8

// Kinds of Envelope.
const (
	// Message: a message From sent To (offer, answer, candidate, leave), as To's client will read it. The
	// receiving node acts on it as if From were one of its own users in a call with To.
	Message Kind = iota + 1
	// Reply: the server's answer to a Message From's node refused or acknowledged (an error, ringing), for To.
	Reply
	// Call: an offer that starts a call From (on the sending node) places with To. The receiving node decides
	// and answers with exactly one Verdict.
	Call
	// Verdict: the answer to a Call: Frame is what To (the caller) is told (ringing, or the error that refused
	// the call; empty when the call was taken without ringing, as in glare); Accepted says whether To and From
	// are now in a call.
	Verdict
	// Takeover: To's session ToSession on the receiving node was resumed on FromNode as FromSession: close it
	// (4000) without ending its call, whose peer, if it is on the receiving node, now talks to the new session.
	// Frame is the name of that call's peer, which the new session took over ("" for none): if that call has
	// ended on the receiving node (the session is gone already, or the peer left), the receiving node tells the
	// new session so (a leave from the peer).
	Takeover
	// Moved: From, in a call with To, moved to FromNode (a resume on another node).
	Moved
	// Probe: a node's message to itself, proving that its subscription delivers (not given to the hub).
	Probe
)

// Envelope is one message between nodes.
type Envelope struct {
	Kind        Kind
	Accepted    bool   // Verdict
	Forwarded   bool   // sent on by a node the recipient had left (it is not sent on again)
	From        string // the user it is from (its name)
	FromNode    string
	FromSession string
	Caller      uint64 // From's caller id
	To          string // the user it is for
	ToSession   string // Takeover: the session to close
	Frame       []byte // Message, Reply, Call, Verdict: the client-ready message; Takeover: the peer's name
}

// Local is what a node's hub offers its Backend.
type Local interface {
	// Deliver acts on an envelope for this node. It must not block: it is called on the Backend's receiving
	// goroutine, in the order the envelopes of one sending node were sent. e is valid only during the call.
	Deliver(e *Envelope)
	// NodeDown says that node is gone (its lease ran out): calls with its users end after the resume grace
	// unless they moved (Moved) in time.
	NodeDown(node string)
	// Registrations lists this node's users, for the Backend to register them again after the shared state was
	// lost (a Redis restarted empty).
	Registrations() []Registration
	// Evict closes a session whose name another session holds now (a conflict settled after the shared state was
	// lost): the client is told, its call ends.
	Evict(name, session string)
	// Undelivered says that e, sent by this node, could not be delivered (its node was unreachable): the sender
	// is told.
	Undelivered(e *Envelope)
	// Orphans returns those of recs (records the shared state has for this node) whose session neither holds
	// its name on this node nor is claiming it (its Claim has not returned to the hub yet). Session ids are new
	// for every login, so such a session never will: the Backend may free these records, fenced by the session
	// id. The Backend must read recs from the shared state before it calls Orphans (a claim that is under way
	// then either still counts as claiming, or has made its session hold the name, or was given up for good).
	Orphans(recs []Record) []Record
	// Holders lists, in a fixed order, up to limit of this node's users whose names come after the name after
	// ("" for the first), each with its session id: the Backend reads them a chunk at a time (a moment of the
	// hub's lock each) to check them against the shared state.
	Holders(after string, limit int) []Record
}

// Record is a name and the login session the shared state says holds it.
type Record struct {
	Name, Session string
}

// Registration is one local user, as the shared state should have it.
type Registration struct {
	Name, Session, Token, Peer string
	Caller                     uint64
}

// Backend is one node's view of a cluster: its Directory, its Bus, and its membership.
type Backend interface {
	Directory
	// Node is this node's id.
	Node() string
	// Send queues e for node without blocking; it reports false when e cannot be sent (the node's queue is
	// full, or the cluster is unreachable). Envelopes to one node arrive in the order they were sent.
	Send(node string, e *Envelope) bool
	// Start joins the cluster: from then on envelopes for this node go to l.
	Start(l Local) error
	// Alive reports whether node is in the cluster, as far as this node knows.
	Alive(node string) bool
	// Ready says whether the node can serve new users (nil) or why not.
	Ready() error
	// Close leaves the cluster; with release, this node's users' names are freed at once (a clean shutdown);
	// without, they wait for the resume grace (a drain, where the users resume on other nodes).
	Close(release bool) error
}

// Defaults shared by the implementations.
const (
	// DefaultResumeGrace is how long the name of a user of a node that died waits for the user to resume on
	// another node, and its peer's call with it, before both are let go.
	DefaultResumeGrace = 10 * time.Second
)
