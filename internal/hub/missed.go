package hub

import (
	"sync/atomic"
	"time"

	"tandem/protocol"
)

// Missed calls: a user who is in a call when someone calls them learns of it. The caller is answered busy (as
// ever); the user, if their login asked for it ("missed": true: clients that would not know the message never get
// it), gets {"type":"missed","name":caller} at once, from the node that has them (where the busy decision is made,
// in a cluster too). It is bounded per user: one message per caller a minute, and at most missedPerMinute a minute
// in all (docs/limits.md).

const (
	// missedPerMinute bounds the missed messages one user gets in a minute.
	missedPerMinute = 10
	// missedWindow is the minute: a caller is told of again only after it.
	missedWindow = time.Minute
)

// missedCalls is a session's part in missed calls.
type missedCalls struct {
	wanted atomic.Bool // the login asked for missed messages
	// recent are the callers told of within the last missedWindow, oldest first; guarded by the hub's mu.
	recent []missedNote
}

type missedNote struct {
	caller string
	at     int64
}

// missedLocked is asked where an offer of s to t is refused with code: when it is busy (t is in another call) and
// t is to be told, it returns t's connection and the caller's name for a missed message, to send once the hub's
// lock is released.
func (s *Session) missedLocked(t *Session, code string) (Conn, string) {
	h := s.hub
	if code != protocol.CodeBusy || t == nil || t.remote != nil || t.name == "" || !t.missed.wanted.Load() || h.isEchoLocked(t) {
		return nil, ""
	}
	now := h.now()
	recent := t.missed.recent[:0]
	for _, n := range t.missed.recent {
		if now-n.at < int64(missedWindow) {
			recent = append(recent, n)
		}
	}
	clear(t.missed.recent[len(recent):]) // let go of the names forgotten
	t.missed.recent = recent
	if len(recent) >= missedPerMinute {
		return nil, ""
	}
	for _, n := range recent {
		if n.caller == s.name {
			return nil, ""
		}
	}
	t.missed.recent = append(t.missed.recent, missedNote{caller: s.name, at: now})
	return t.conn, s.name
}
