package server_test

import (
	"fmt"
	"slices"
	"testing"

	"tandem/client"
	"tandem/protocol"
)

// watch asks for the list of names starting with query and to be kept up to date; it returns the reply.
func watch(t *testing.T, c *client.Client, query string) *client.Message {
	t.Helper()
	if err := c.WatchUsers(ctx5(t), query, 0); err != nil {
		t.Fatal(err)
	}
	m := next(t, c)
	if m.Type != protocol.TypeUsers || !m.Watching || m.Update || m.Query != query {
		t.Fatalf("watch %q: got %+v, want a users reply that watches", query, m)
	}
	return m
}

// pushedUntil reads the lists pushed to c until ok holds; it fails on anything else, and returns how many came.
func pushedUntil(t *testing.T, c *client.Client, what string, ok func(*client.Message) bool) int {
	t.Helper()
	for n := 1; ; n++ {
		m := next(t, c)
		if m.Type != protocol.TypeUsers || !m.Update {
			t.Fatalf("waiting for %s: got %+v, want a pushed users list", what, m)
		}
		if ok(m) {
			return n
		}
	}
}

func state(m *client.Message, name string) string {
	for _, u := range m.Users {
		if u.Name == name {
			if u.Busy {
				return "busy"
			}
			return "free"
		}
	}
	return ""
}

// TestPresenceIsPushed: two tabs, two names (the README's first step), then a call: a watching client sees the
// other log in, go busy, come back and leave without asking again; a client that asks once, and one that speaks
// only the tutorial's protocol, get nothing they did not ask for; a burst of logins costs a watcher a message per
// round, not one per login.
func TestPresenceIsPushed(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	first := r.user("first", nil)
	if m := watch(t, first, ""); !slices.Equal(names(m), []string{"first"}) || m.Total != 1 {
		t.Fatalf("first list: %+v", m)
	}
	tutorial := r.dial(nil)
	send(t, tutorial, `{"type":"login","name":"tutorial"}`)
	if m := next(t, tutorial); m.Type != protocol.TypeLogin || !m.Success {
		t.Fatalf("tutorial login: %+v", m)
	}
	once := r.user("once", nil)
	if err := once.SendUsers(ctx5(t), "", 0); err != nil {
		t.Fatal(err)
	}
	if m := next(t, once); m.Type != protocol.TypeUsers || m.Watching {
		t.Fatalf("a one-off list: %+v", m)
	}

	second := r.user("second", nil)
	pushedUntil(t, first, "second to show", func(m *client.Message) bool { return state(m, "second") == "free" && m.Total == 4 })
	r.user("third", nil)
	if err := second.SendOffer(ctx5(t), "third", []byte(offerSDP)); err != nil {
		t.Fatal(err)
	}
	pushedUntil(t, first, "the call to show", func(m *client.Message) bool {
		return state(m, "second") == "busy" && state(m, "third") == "busy"
	})
	if err := second.SendLeave(ctx5(t), "third", protocol.ReasonCancelled); err != nil {
		t.Fatal(err)
	}
	pushedUntil(t, first, "the call's end to show", func(m *client.Message) bool {
		return state(m, "second") == "free" && state(m, "third") == "free"
	})
	second.Close()
	pushedUntil(t, first, "second to go", func(m *client.Message) bool { return state(m, "second") == "" && m.Total == 4 })

	// A burst of logins: the watcher gets the result in a few pushes, not one per login.
	const burst = 30
	for i := range burst {
		r.user(fmt.Sprintf("u%02d", i), nil)
	}
	pushes := pushedUntil(t, first, "the burst to show", func(m *client.Message) bool { return m.Total == 4+burst })
	if pushes >= burst/2 {
		t.Errorf("%d logins made %d pushes to one watcher, want a few (one per round)", burst, pushes)
	}

	// The pushes of the last round were all handed to their connections before another watcher's reply is
	// (the reply waits for the round); what once and tutorial are sent after that comes after anything pushed.
	watch(t, r.user("sync", nil), "")
	if err := once.SendUsers(ctx5(t), "zzz", 0); err != nil {
		t.Fatal(err)
	}
	if m := next(t, once); m.Type != protocol.TypeUsers || m.Update || m.Query != "zzz" {
		t.Fatalf("the client that asked once was sent %+v", m)
	}
	send(t, tutorial, `{"type":"leave"}`)
	if m := next(t, tutorial); m.Type != protocol.TypeError || m.Code != protocol.CodeNotInCall {
		t.Fatalf("the tutorial client was sent %+v", m)
	}
}

func names(m *client.Message) []string {
	var out []string
	for _, u := range m.Users {
		out = append(out, u.Name)
	}
	return out
}
