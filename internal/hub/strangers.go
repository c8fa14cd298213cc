package hub

import "time"

// What a caller may send a user who has not accepted its call (not answered it, nor offered back), and when it
// may ring that user again. Each user keeps a small table of such callers, its strangers: a budget of messages
// and bytes that refills over time, and the end of a cooldown after the user declined (or the caller gave up).
// The budget is not reset by a new call, so ringing again and again (offer, cancel, offer...) spends it too; it
// is forgotten when the user accepts the call. docs/limits.md lists the numbers.

const (
	// unansweredMessages and unansweredBytes are what a caller may send a user before the user accepts its call:
	// room for an offer and a browser's trickle of candidates, well below a send queue.
	unansweredMessages = 64
	unansweredBytes    = 128 << 10
	// unansweredRefill is how long a spent budget takes to refill completely.
	unansweredRefill = time.Minute
	// maxStrangers is how many callers a user keeps records of; a new one takes the place of the least recently
	// active (an idle one first).
	maxStrangers = 16

	// Renegotiation offers within a call: a burst, then one every offerInterval.
	offerBurst    = 5
	offerInterval = 2 * time.Second
)

// stranger is what a user (the callee) keeps about one caller it has not accepted.
type stranger struct {
	caller   uint64  // the caller's Session.id
	messages float64 // budget left
	bytes    float64
	at       int64  // when the budget was last refilled (hub clock)
	until    int64  // the caller may not ring again before this (hub clock); 0: no cooldown
	reason   string // why the cooldown: protocol.ReasonDeclined or protocol.ReasonNoAnswer
}

func (r *stranger) refill(now int64) {
	if now > r.at {
		f := float64(now-r.at) / float64(unansweredRefill)
		r.messages = min(unansweredMessages, r.messages+f*unansweredMessages)
		r.bytes = min(unansweredBytes, r.bytes+f*unansweredBytes)
		r.at = now
	}
}

// idle reports whether the record says nothing: a full budget and no cooldown.
func (r *stranger) idle(now int64) bool {
	return r.messages >= unansweredMessages && r.bytes >= unansweredBytes && r.until <= now
}

// spend takes one message of n bytes from the budget, if it has room (a full budget takes any one message).
func (r *stranger) spend(n int) bool {
	if r.messages < 1 || (r.bytes < float64(n) && r.bytes < unansweredBytes) {
		return false
	}
	r.messages--
	r.bytes -= float64(n)
	return true
}

// wait is how long until the budget has room for a message of n bytes.
func (r *stranger) wait(n int) time.Duration {
	need := max(1-r.messages, 0) / unansweredMessages
	if b := min(float64(n), unansweredBytes); r.bytes < b {
		need = max(need, (b-r.bytes)/unansweredBytes)
	}
	return time.Duration(need * float64(unansweredRefill))
}

// strangerLocked returns t's record of the caller with the given id, refilled to now; if there is none, it makes
// one when create is set and returns nil otherwise. The pointer is valid until t's records next change.
func (t *Session) strangerLocked(caller uint64, now int64, create bool) *stranger {
	for i := range t.strangers {
		if r := &t.strangers[i]; r.caller == caller {
			r.refill(now)
			return r
		}
	}
	if !create {
		return nil
	}
	fresh := stranger{caller: caller, messages: unansweredMessages, bytes: unansweredBytes, at: now}
	if len(t.strangers) < maxStrangers {
		t.strangers = append(t.strangers, fresh)
		return &t.strangers[len(t.strangers)-1]
	}
	victim := 0
	for i := range t.strangers {
		r, v := &t.strangers[i], &t.strangers[victim]
		if r.refill(now); r.idle(now) {
			victim = i
			break
		}
		if r.at < v.at {
			victim = i
		}
	}
	t.strangers[victim] = fresh
	return &t.strangers[victim]
}

// forgetStrangerLocked drops t's record of a caller: t accepted its call.
func (t *Session) forgetStrangerLocked(caller uint64) {
	for i := range t.strangers {
		if t.strangers[i].caller == caller {
			last := len(t.strangers) - 1
			t.strangers[i] = t.strangers[last]
			t.strangers = t.strangers[:last]
			return
		}
	}
}

// allowOfferLocked applies the renegotiation limit to an offer s sends within its call; Config.Rate 0 turns it
// off with the other rate limits.
func (s *Session) allowOfferLocked(now int64) bool {
	if s.hub.cfg.Rate <= 0 {
		return true
	}
	if now > s.offersAt {
		s.offers = min(offerBurst, s.offers+float64(now-s.offersAt)/float64(offerInterval))
	}
	s.offersAt = now
	if s.offers < 1 {
		return false
	}
	s.offers--
	return true
}

// seconds rounds d up to whole seconds, at least one.
func seconds(d time.Duration) int {
	return max(int((d+time.Second-1)/time.Second), 1)
}
