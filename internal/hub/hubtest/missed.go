package hubtest

import (
	"fmt"
	"testing"
)

// testMissedCalls: a user in a call whose login asked for it ("missed": true) is told of each caller answered busy
// meanwhile, once per caller, and of at most 10 callers a minute, from whichever node the caller is on; a user
// whose login did not ask is told nothing.
func testMissedCalls(t *testing.T, e *env) {
	a, b := e.client(0), e.client(1)
	a.Login("a")
	b.Send(`{"type":"login","name":"b","missed":true}`)
	if m := b.Next(); m["success"] != true {
		t.Fatalf("login b: %v", m)
	}
	a.Send(offer("b"))
	a.Expect(msg{"type": "ringing", "name": "b"})
	b.Expect(msg{"type": "offer", "name": "a"})
	b.Send(answer("a"))
	a.Expect(msg{"type": "answer", "name": "b"})

	busy := func(u *Client, callee string) {
		t.Helper()
		u.Send(offer(callee))
		u.Expect(msg{"type": "error", "code": "busy", "name": callee})
	}
	// Callers on every node; each one's busy answer comes after b was told (the callee's node decides).
	var callers []*Client
	for i := range 12 {
		u := e.client(i)
		u.Login(fmt.Sprintf("caller%d", i))
		callers = append(callers, u)
	}
	busy(callers[0], "b")
	b.Expect(msg{"type": "missed", "name": "caller0"})
	busy(callers[0], "b") // again: not told twice
	busy(callers[1], "b")
	b.Expect(msg{"type": "missed", "name": "caller1"})
	var want []map[string]any
	for i := 2; i < len(callers); i++ {
		busy(callers[i], "b")
		if i < 10 {
			want = append(want, msg{"type": "missed", "name": fmt.Sprintf("caller%d", i)})
		}
	}
	// Ten callers were told of; the next two not, and nothing came after them but what a sends.
	a.Send(candidate("b", 1))
	b.Expect(append(want, msg{"type": "candidate", "name": "a"})...)

	// a's login did not ask: a caller's busy answer leaves a undisturbed.
	busy(callers[0], "a")
	b.Send(candidate("a", 2))
	a.Expect(msg{"type": "candidate", "name": "b"})
}
