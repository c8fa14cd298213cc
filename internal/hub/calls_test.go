package hub

import (
	"strings"
	"testing"

	"tandem/protocol"
)

// callRecorder is a CallEvents that checks the hub's side of the contract: every call that starts ends exactly
// once, is answered at most once and before it ends, and between the same two users the hub has in a call.
type callRecorder struct {
	t    *testing.T
	live map[*recordedCall]bool
	busy int
}

type recordedCall struct {
	r              *callRecorder
	caller, callee string
	echo           bool
	answered       int
	ended          int
	reports        int
}

func (r *callRecorder) Started(caller, callee string, echo bool) Call {
	if caller == "" || callee == "" || caller == callee {
		r.t.Fatalf("Started(%q, %q)", caller, callee)
	}
	c := &recordedCall{r: r, caller: caller, callee: callee, echo: echo}
	r.live[c] = true
	return c
}

func (r *callRecorder) Busy(caller, callee string, echo bool) { r.busy++ }

func (c *recordedCall) Answered() {
	if c.answered++; c.answered > 1 || c.ended > 0 {
		c.r.t.Fatalf("the call %s→%s answered %d times, ended %d times", c.caller, c.callee, c.answered, c.ended)
	}
}

func (c *recordedCall) Ended(by, reason string) {
	if c.ended++; c.ended > 1 {
		c.r.t.Fatalf("the call %s→%s ended twice", c.caller, c.callee)
	}
	if by != "" && by != c.caller && by != c.callee {
		c.r.t.Fatalf("the call %s→%s ended by %q", c.caller, c.callee, by)
	}
	if (by == "") != (reason == protocol.ReasonShutdown) {
		c.r.t.Fatalf("the call %s→%s ended by %q for %q", c.caller, c.callee, by, reason)
	}
	delete(c.r.live, c)
}

func (c *recordedCall) Report(by, peer string, q protocol.Quality) error {
	if by != c.caller && by != c.callee { // the session's last call, made under another name
		return &ReportError{Code: protocol.CodeNotInCall, Message: "not your call"}
	}
	c.reports++
	return nil
}

// checkCalls: the calls that started and have not ended are exactly the hub's calls, each known to both
// sessions by its record.
func (r *callRecorder) checkCalls(h *Hub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	inHub := map[*recordedCall]bool{}
	for _, s := range h.users {
		p := s.peer
		if p == nil {
			continue
		}
		c, _ := callOfLocked(s, p).(*recordedCall)
		if c == nil || !r.live[c] {
			r.t.Fatalf("%s is in a call with %s that has no live record (%v)", s.name, p.name, c)
		}
		if !(c.caller == s.name && c.callee == p.name) && !(c.caller == p.name && c.callee == s.name) {
			r.t.Fatalf("%s and %s are in a call recorded as %s→%s", s.name, p.name, c.caller, c.callee)
		}
		if c.echo != h.isEchoLocked(p) {
			r.t.Fatalf("the call %s→%s: echo %v", c.caller, c.callee, c.echo)
		}
		if (c.answered == 0) != (s.unanswered || p.unanswered) {
			r.t.Fatalf("the call %s→%s: answered %d times, unanswered %v/%v", c.caller, c.callee, c.answered, s.unanswered, p.unanswered)
		}
		inHub[c] = true
	}
	if len(inHub) != len(r.live) {
		r.t.Fatalf("%d calls in the hub, %d started and not ended", len(inHub), len(r.live))
	}
}

// FuzzHubCalls runs FuzzHub's scenarios (the same encoding, its seeds) with a CallEvents that checks after every
// step that the hub reports each call's start, answer and end once, and that its calls are those it reported;
// op 0xf0 and above sends a quality report (valid or not) about a call with the user named by the argument.
func FuzzHubCalls(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	reports := []string{
		`{"phase":"connected","path":"direct","transport":"udp","iceMs":300,"rttMs":20,"lossPct":0}`,
		`{"phase":"ended","path":"relay"}`,
		`{"phase":"failed"}`,
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*maxFuzzSteps {
			ops = ops[:3*maxFuzzSteps]
		}
		r := newFuzzRun(t)
		rec := &callRecorder{t: t, live: map[*recordedCall]bool{}}
		r.h.cfg.Calls = rec
		for len(ops) > 0 {
			op := ops[:min(len(ops), 3)]
			ops = ops[len(op):]
			if op[0] >= 0xf0 && len(op) == 3 {
				u := r.slots[int(op[1])%fuzzSlots]
				if u == nil {
					continue
				}
				target := strings.TrimSpace(fuzzNames[int(op[2])%len(fuzzNames)])
				u.s.OnText([]byte(`{"type":"quality","name":"` + target + `","quality":` + reports[int(op[0])%len(reports)] + `}`))
				for _, m := range u.c.msgs {
					if m["type"] != "error" || (m["code"] != protocol.CodeNotInCall && m["code"] != protocol.CodeNotLoggedIn) {
						t.Fatalf("a quality report was answered %v", m)
					}
				}
				r.forget()
			} else {
				r.step(op)
			}
			r.check()
			rec.checkCalls(r.h)
		}
		r.finish()
		if len(rec.live) != 0 {
			t.Fatalf("%d calls never ended", len(rec.live))
		}
	})
}
