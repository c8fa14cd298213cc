package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

// These tests drive a real tandem server, in-process on 127.0.0.1, through the client.

func startServer(t *testing.T) string {
	t.Helper()
	return servertest.Start(t, func(c *server.Config) { c.EchoName = "echo" }).URL
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// login dials and logs in as name, or fails the test.
func login(t *testing.T, url, name string, opts *client.Options) (*client.Client, *client.Message) {
	t.Helper()
	c, err := client.Dial(ctxFor(t), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	reply, err := c.Login(ctxFor(t), name, "")
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return c, reply
}

// next reads the next message, or fails the test.
func next(t *testing.T, c *client.Client) *client.Message {
	t.Helper()
	m, err := c.Read(ctxFor(t))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

func TestServerCallMessages(t *testing.T) {
	t.Parallel()
	for _, tutorial := range []bool{false, true} {
		url := startServer(t)
		opts := &client.Options{Tutorial: tutorial}
		alice, reply := login(t, url, "alice", opts)
		if !reply.Success || reply.Name != "alice" || reply.Token == "" {
			t.Fatalf("login reply %+v", reply)
		}
		bob, _ := login(t, url, "bob", opts)
		ctx := ctxFor(t)

		offer := json.RawMessage(`{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}`)
		if err := alice.SendOffer(ctx, "bob", offer); err != nil {
			t.Fatal(err)
		}
		m := next(t, bob)
		if m.Type != protocol.TypeOffer || m.Name != "alice" || string(m.Offer) != string(offer) {
			t.Fatalf("bob got %+v", m)
		}
		if m := next(t, alice); m.Type != protocol.TypeRinging || m.Name != "bob" {
			t.Fatalf("alice got %+v, want ringing", m)
		}
		answer := json.RawMessage(`{"type":"answer","sdp":"v=0\r\n"}`)
		if err := bob.SendAnswer(ctx, "alice", answer); err != nil {
			t.Fatal(err)
		}
		if m := next(t, alice); m.Type != protocol.TypeAnswer || string(m.Answer) != string(answer) {
			t.Fatalf("alice got %+v, want the answer", m)
		}
		cand := json.RawMessage(`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}`)
		for _, c := range []json.RawMessage{cand, nil} {
			if err := bob.SendCandidate(ctx, "alice", c); err != nil {
				t.Fatal(err)
			}
			want := string(c)
			if c == nil {
				want = "null"
			}
			if m := next(t, alice); m.Type != protocol.TypeCandidate || string(m.Candidate) != want {
				t.Fatalf("alice got %+v, want candidate %s", m, want)
			}
		}
		if err := alice.SendLeave(ctx, "bob", protocol.ReasonHangup); err != nil {
			t.Fatal(err)
		}
		if m := next(t, bob); m.Type != protocol.TypeLeave || m.Name != "alice" {
			t.Fatalf("bob got %+v, want leave", m)
		}
	}
}

func TestServerErrors(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	alice, _ := login(t, url, "alice", nil)
	bob, _ := login(t, url, "bob", nil)
	carol, _ := login(t, url, "carol", nil)
	ctx := ctxFor(t)
	offer := json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)

	// A taken name, and an invalid one.
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice", ""); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("login as a taken name: %v", err)
	}
	if _, err := c.Login(ctx, "", ""); !errors.Is(err, client.ErrInvalidName) {
		t.Fatalf("login with no name: %v", err)
	}

	// Before login.
	if err := c.SendOffer(ctx, "bob", offer); err != nil {
		t.Fatal(err)
	}
	if err := next(t, c).Err(); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("offer before login: %v", err)
	}

	for _, tc := range []struct {
		to   string
		want error
	}{{"nobody", client.ErrNotOnline}, {"alice", client.ErrSelfCall}} {
		if err := alice.SendOffer(ctx, tc.to, offer); err != nil {
			t.Fatal(err)
		}
		m := next(t, alice)
		var e *client.Error
		if err := m.Err(); !errors.Is(err, tc.want) || !errors.As(err, &e) || e.Request != protocol.TypeOffer {
			t.Fatalf("offer to %s: %+v, want %v", tc.to, m, tc.want)
		}
	}

	// Busy: bob is in a call with carol.
	if err := carol.SendOffer(ctx, "bob", offer); err != nil {
		t.Fatal(err)
	}
	next(t, bob)   // the offer
	next(t, carol) // ringing
	if err := alice.SendOffer(ctx, "bob", offer); err != nil {
		t.Fatal(err)
	}
	if err := next(t, alice).Err(); !errors.Is(err, client.ErrBusy) {
		t.Fatalf("offer to a busy user: %v", err)
	}
	if err := alice.SendAnswer(ctx, "bob", offer); err != nil {
		t.Fatal(err)
	}
	if err := next(t, alice).Err(); !errors.Is(err, client.ErrNotInCall) {
		t.Fatalf("answer to a stranger: %v", err)
	}

	// An unknown type.
	if err := alice.Send(ctx, map[string]string{"type": "dance"}); err != nil {
		t.Fatal(err)
	}
	if err := next(t, alice).Err(); !errors.Is(err, client.ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestServerResume(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	ctx := ctxFor(t)
	alice, reply := login(t, url, "alice", nil)
	bob, _ := login(t, url, "bob", nil)
	if err := alice.SendOffer(ctx, "bob", json.RawMessage(`{"type":"offer","sdp":""}`)); err != nil {
		t.Fatal(err)
	}
	next(t, bob)

	again, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	resumed, err := again.Login(ctx, "alice", reply.Token)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if resumed.Peer != "bob" {
		t.Fatalf("resumed login %+v, want peer bob", resumed)
	}
	// The old connection is closed as replaced.
	for {
		_, err := alice.Read(ctx)
		if err == nil {
			continue
		}
		if !errors.Is(err, client.ErrReplaced) {
			t.Fatalf("old connection: %v, want ErrReplaced", err)
		}
		break
	}
}

func TestServerUsers(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	ctx := ctxFor(t)
	alice, _ := login(t, url, "alice", nil)
	login(t, url, "Alan", nil)
	login(t, url, "echo", nil)
	if err := alice.SendUsers(ctx, "al", 1); err != nil {
		t.Fatal(err)
	}
	m, err := alice.WaitFor(ctx, protocol.TypeUsers)
	if err != nil {
		t.Fatal(err)
	}
	if m.Total != 3 || !m.More || len(m.Users) != 1 || m.Users[0].Name != "Alan" || m.Query != "al" {
		t.Fatalf("users al, 1: %+v", m)
	}
	if err := alice.SendUsers(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	m, err = alice.WaitFor(ctx, protocol.TypeUsers)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Users) != 3 || m.More || m.Users[2].Name != "echo" || !m.Users[2].Echo || m.Users[0].Echo {
		t.Fatalf("users: %+v", m)
	}
}
