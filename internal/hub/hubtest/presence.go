package hubtest

import (
	"fmt"
	"testing"
)

// testPresence: a client that watches the user list sees logins, calls and departures without asking again, on
// whichever node they happen; clients that do not watch (the tutorial's) get nothing they did not ask for, and a
// watcher whose page a change does not touch gets nothing either.
func testPresence(t *testing.T, e *env) {
	w := e.client(0) // watches the first page
	w.Login("watcher")
	w.Send(`{"type":"users","watch":true}`)
	w.Expect(msg{"type": "users", "watching": true, "users": "[map[busy:false name:watcher]]", "total": 1})
	w2 := e.client(0) // watches the first page too: the same query, shared
	w2.Send(`{"type":"users","watch":true,"limit":50}`)
	w2.Expect(msg{"type": "users", "watching": true, "total": 1})
	z := e.client(1) // watches names starting with "zz"
	z.Login("zed")
	z.Send(`{"type":"users","watch":true,"query":"ZZ"}`)
	z.Expect(msg{"type": "users", "query": "ZZ", "watching": true, "users": "[]"})
	plain := e.client(1) // asks once, without watching
	plain.Login("plain")
	plain.Send(`{"type":"users"}`)
	plain.Expect(msg{"type": "users"})
	tutorial := e.client(2) // never asks
	tutorial.Login("tutorial")

	// A login shows up.
	a := e.client(1)
	a.Login("alice")
	pushUntil(t, w, "", func(m msg) bool { return listed(m, "alice") == "free" && m["total"] == 5.0 })
	pushUntil(t, w2, "", func(m msg) bool { return listed(m, "alice") == "free" })
	// A call marks both busy, and its end frees them.
	b := e.client(2)
	b.Login("bob")
	a.Send(offer("bob"))
	a.Expect(msg{"type": "ringing"})
	b.Expect(msg{"type": "offer"})
	pushUntil(t, w, "", func(m msg) bool { return listed(m, "alice") == "busy" && listed(m, "bob") == "busy" })
	a.Send(`{"type":"leave","reason":"hangup"}`)
	b.Expect(msg{"type": "leave"})
	pushUntil(t, w, "", func(m msg) bool { return listed(m, "alice") == "free" && listed(m, "bob") == "free" })
	// A departure removes the user, and the count follows.
	a.Close()
	pushUntil(t, w, "", func(m msg) bool { return listed(m, "alice") == "" && m["total"] == 5.0 })
	pushUntil(t, w2, "", func(m msg) bool { return listed(m, "alice") == "" && listed(m, "bob") == "free" })

	// None of that was in the "zz" page: its watcher got no new page (at most the online count, which is sent
	// again at most every 10 s), and the two that did not watch got nothing.
	countOnly(t, z, "[]")
	plain.Expect()
	tutorial.Expect()
	zz := e.client(2)
	zz.Login("zzTop")
	if m := nextPage(t, z, "[]"); m["query"] != "ZZ" || listed(m, "zzTop") != "free" || m["total"] != 6.0 {
		t.Fatalf("the zz watcher got %v, want its page with zzTop", m)
	}

	pushUntil(t, w, "", func(m msg) bool { return listed(m, "zzTop") == "free" })
	pushUntil(t, w2, "", func(m msg) bool { return listed(m, "zzTop") == "free" })
	// A users request without watch is a one-off look-up: the watch goes on. One with "watch": false ends it:
	// the next change reaches the other watcher only.
	w.Send(`{"type":"users","limit":1,"query":"b"}`)
	w.Expect(msg{"type": "users", "users": "[map[busy:false name:bob]]", "watching": nil, "query": "b"})
	b.Close()
	pushUntil(t, w, "", func(m msg) bool { return listed(m, "bob") == "" })
	pushUntil(t, w2, "", func(m msg) bool { return listed(m, "bob") == "" })
	w.Send(`{"type":"users","watch":false,"limit":1}`)
	w.Expect(msg{"type": "users", "users": "[map[busy:false name:plain]]", "watching": nil})
	carol := e.client(1)
	carol.Login("carol")
	pushUntil(t, w2, "", func(m msg) bool { return listed(m, "carol") == "free" })
	w.Expect()
	plain.Expect()
	tutorial.Expect()
	countOnly(t, z, "[map[busy:false name:zzTop]]")
	// A connection that closes stops watching; the others go on.
	w2.Close()
	carol.Close()
	zz.Close()
	if m := nextPage(t, z, "[map[busy:false name:zzTop]]"); listed(m, "zzTop") != "" {
		t.Fatalf("the zz watcher got %v, want its page without zzTop", m)
	}
}

// countOnly checks that what u was pushed so far only refreshed the online count of its page.
func countOnly(t *testing.T, u *Client, page string) {
	t.Helper()
	u.C.mu.Lock()
	got := u.C.msgs
	u.C.msgs = nil
	u.C.mu.Unlock()
	for _, m := range got {
		if m["type"] != "users" || m["update"] != true || fmt.Sprint(m["users"]) != page {
			t.Fatalf("got %v, want nothing but the same page %s", m, page)
		}
	}
}

// nextPage returns the next page pushed to u that is not page (a push that only refreshes the count is skipped).
func nextPage(t *testing.T, u *Client, page string) msg {
	t.Helper()
	for {
		m := u.Next()
		if m["type"] != "users" || m["update"] != true {
			t.Fatalf("got %v, want a pushed users update", m)
		}
		if fmt.Sprint(m["users"]) != page {
			return m
		}
	}
}

// pushUntil reads pushed lists of u until ok holds: every message on the way must be a users update for query.
func pushUntil(t *testing.T, u *Client, query string, ok func(msg) bool) {
	t.Helper()
	for {
		m := u.Next()
		if m["type"] != "users" || m["update"] != true || m["query"] != query {
			t.Fatalf("got %v, want a pushed users update for query %q", m, query)
		}
		if ok(m) {
			return
		}
	}
}

// listed says how name shows in a users message: "busy", "free", or "" when it is not listed.
func listed(m msg, name string) string {
	users, _ := m["users"].([]any)
	for _, u := range users {
		e, _ := u.(map[string]any)
		if e["name"] == name {
			if e["busy"] == true {
				return "busy"
			}
			return "free"
		}
	}
	return ""
}
