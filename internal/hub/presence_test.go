package hub_test

import (
	"strings"
	"testing"

	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
	"tandem/protocol"
)

// TestWatchedListsAreBounded: past Config.WatchQueries different lists, a watch request for yet another list is
// answered once, without "watching", and gets no updates; a list already watched can still be watched by more,
// and a list no one watches any more frees its place.
func TestWatchedListsAreBounded(t *testing.T) {
	cfg := hubtest.Config()
	cfg.WatchQueries = 2
	h := hub.New(cfg)
	t.Cleanup(h.Shutdown)
	a, b, c, d := hubtest.Connect(t, h), hubtest.Connect(t, h), hubtest.Connect(t, h), hubtest.Connect(t, h)
	a.Send(`{"type":"users","watch":true,"query":"a"}`)
	a.Expect(map[string]any{"type": "users", "watching": true})
	b.Send(`{"type":"users","watch":true,"query":"b"}`)
	b.Expect(map[string]any{"type": "users", "watching": true})
	c.Send(`{"type":"users","watch":true,"query":"c"}`)
	c.Expect(map[string]any{"type": "users", "query": "c", "watching": nil})
	d.Send(`{"type":"users","watch":true,"query":"a"}`) // the same list as a's: shared, not a new one
	d.Expect(map[string]any{"type": "users", "watching": true})

	u := hubtest.Connect(t, h)
	u.Login("carol") // in the list c asked for: c does not watch it, and gets nothing
	u2 := hubtest.Connect(t, h)
	u2.Login("anna")
	a.Expect(map[string]any{"type": "users", "update": true, "users": "[map[busy:false name:anna]]"})
	d.Expect(map[string]any{"type": "users", "update": true, "users": "[map[busy:false name:anna]]"})
	c.Expect()

	// b stops watching: its place is free for c's list.
	b.Send(`{"type":"users","watch":false}`)
	b.Expect(map[string]any{"type": "users"})
	c.Send(`{"type":"users","watch":true,"query":"c"}`)
	c.Expect(map[string]any{"type": "users", "watching": true, "users": "[map[busy:false name:carol]]"})

	// A query longer than any name can match nobody, ever: it is answered, and not watched (it would hold its
	// text, up to a message's size, for nothing). The connection's watch ends, as for any other list.
	long := strings.Repeat("a", protocol.MaxNameLength+1)
	a.Send(`{"type":"users","watch":true,"query":"` + long + `"}`)
	a.Expect(map[string]any{"type": "users", "users": "[]", "watching": nil})
	u3 := hubtest.Connect(t, h)
	u3.Login("al")
	d.Expect(map[string]any{"type": "users", "update": true, "users": "[map[busy:false name:al] map[busy:false name:anna]]"})
	a.Expect()
}
