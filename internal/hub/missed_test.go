package hub

import (
	"fmt"
	"testing"
	"time"
)

// TestMissedWindow: a busy user is told of a caller once a minute, and of at most missedPerMinute callers a
// minute; a minute later the same callers are told of again, and the records of the minute before are let go.
func TestMissedWindow(t *testing.T) {
	h := New(Config{})
	clk := fakeClock(h)
	login := func(name, extra string) *user {
		u := connect(t, h)
		u.send(`{"type":"login","name":"` + name + `"` + extra + `}`)
		if got := u.c.take(); len(got) != 1 || got[0]["success"] != true {
			t.Fatalf("login %s: %v", name, got)
		}
		return u
	}
	a, b := login("a", ""), login("b", `,"missed":true`)
	a.send(`{"type":"offer","name":"b","offer":{}}`)
	b.send(`{"type":"answer","name":"a","answer":{}}`)
	a.c.take()
	b.c.take()

	callers := make([]*user, missedPerMinute+2)
	for i := range callers {
		callers[i] = login(fmt.Sprint("c", i), "")
	}
	ring := func(u *user) {
		t.Helper()
		u.send(`{"type":"offer","name":"b","offer":{}}`)
		u.expect(map[string]any{"type": "error", "code": "busy"})
	}
	var want []map[string]any
	for i, u := range callers {
		ring(u)
		ring(u)
		if i < missedPerMinute {
			want = append(want, map[string]any{"type": "missed", "name": fmt.Sprint("c", i)})
		}
		clk.advance(time.Second)
	}
	b.expect(want...)

	clk.advance(missedWindow)
	ring(callers[0])
	ring(callers[len(callers)-1])
	b.expect(map[string]any{"type": "missed", "name": "c0"}, map[string]any{"type": "missed", "name": fmt.Sprint("c", len(callers)-1)})
	h.mu.Lock()
	kept := len(b.s.missed.recent)
	h.mu.Unlock()
	if kept != 2 {
		t.Errorf("b keeps %d records of callers, want the 2 of this minute", kept)
	}
}
