package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/cluster/rediscluster"
	"tandem/internal/redistest"
	"tandem/internal/server"
	"tandem/protocol"
)

// startNode runs a server that is one node of a cluster on the Redis at url.
func startNode(t *testing.T, url, id string, drain time.Duration) *running {
	t.Helper()
	b, err := rediscluster.New(rediscluster.Config{URL: url, Node: id, Heartbeat: 200 * time.Millisecond,
		Lease: time.Second, ResumeGrace: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, func(c *server.Config) {
		c.Cluster, c.ResumeGrace, c.DrainWindow = b, 3*time.Second, drain
	})
}

// drained is what a client of the draining node saw: how its connection ended, when, and its resume on the
// other node.
type drained struct {
	name    string
	closed  error
	at      time.Duration // since the shutdown began
	before  []*client.Message
	resumed *client.Client
	reply   *client.Message
	err     error
}

// TestClusterDrain stops a cluster node with users in calls (one with a user of the other node, one between two
// of its own users) and idle users: every one of its connections is closed with 1012, spread over the drain
// window; each user resumes on the other node with its token and keeps its name and its call, and the peers see
// nothing but the messages relayed to them.
func TestClusterDrain(t *testing.T) {
	r := redistest.Start(t)
	const window = 2 * time.Second
	leaving := startNode(t, r.URL(), "leaving", window)
	staying := startNode(t, r.URL(), "staying", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	login := func(n *running, name string) (*client.Client, string) {
		t.Helper()
		c := n.dial(nil)
		m, err := c.Login(ctx, name, "")
		if err != nil {
			t.Fatalf("login %s: %v", name, err)
		}
		return c, m.Token
	}
	call := func(caller *client.Client, from string, callee *client.Client, to string) {
		t.Helper()
		if err := caller.SendOffer(ctx, to, json.RawMessage(offerSDP)); err != nil {
			t.Fatal(err)
		}
		if m := next(t, caller); m.Type != protocol.TypeRinging {
			t.Fatalf("%s got %+v, want ringing", from, m)
		}
		if m := next(t, callee); m.Type != protocol.TypeOffer || m.Name != from {
			t.Fatalf("%s got %+v, want the offer", to, m)
		}
		if err := callee.SendAnswer(ctx, from, json.RawMessage(answerSDP)); err != nil {
			t.Fatal(err)
		}
		if m := next(t, caller); m.Type != protocol.TypeAnswer || m.Name != to {
			t.Fatalf("%s got %+v, want the answer", from, m)
		}
	}

	// On the node that will leave: alice (in a call with bob, on the other node), carol and dave (in a call with
	// each other), and seven idle users.
	names := []string{"alice", "carol", "dave"}
	for i := range 7 {
		names = append(names, fmt.Sprintf("idle%d", i))
	}
	clients, tokens := map[string]*client.Client{}, map[string]string{}
	for _, n := range names {
		clients[n], tokens[n] = login(leaving, n)
	}
	bob, _ := login(staying, "bob")
	call(clients["alice"], "alice", bob, "bob")
	call(clients["carol"], "carol", clients["dave"], "dave")

	// SIGTERM, as far as Serve knows: its context ends.
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- leaving.Stop() }()

	// Each user reads until its connection is closed, then resumes on the other node at once.
	results := make([]*drained, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &drained{name: n}
			results[i] = d
			for {
				m, err := clients[n].Read(ctx)
				if err != nil {
					d.closed, d.at = err, time.Since(start)
					break
				}
				d.before = append(d.before, m)
			}
			c, err := client.Dial(ctx, staying.URL, nil)
			if err != nil {
				d.err = err
				return
			}
			d.resumed = c
			d.reply, d.err = c.Login(ctx, n, tokens[n])
		}()
	}
	wg.Wait()
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}

	var times []time.Duration
	for _, d := range results {
		if d.resumed != nil {
			t.Cleanup(func() { _ = d.resumed.CloseNow() })
		}
		var ce *client.CloseError
		if !errors.As(d.closed, &ce) || ce.Code != protocol.CloseServiceRestart || ce.Reason == "" {
			t.Errorf("%s: the connection ended with %v, want a close 1012 with a reason", d.name, d.closed)
		}
		if len(d.before) > 0 {
			t.Errorf("%s was told %+v before the close; want nothing", d.name, d.before)
		}
		if d.err != nil || d.reply == nil || d.reply.Name != d.name {
			t.Errorf("%s could not resume on the other node: %+v %v", d.name, d.reply, d.err)
		}
		times = append(times, d.at)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Spread over the window: the first at once, the last near its end, never most of them together.
	slices.Sort(times)
	if first, last := times[0], times[len(times)-1]; first > window/4 || last-first < window/2 || last > window+time.Second {
		t.Fatalf("closes at %v; want them spread over %v", times, window)
	}
	for i := range times[:len(times)-3] {
		if times[i+3]-times[i] < window/10 {
			t.Fatalf("closes at %v: four within %v", times, window/10)
		}
	}

	// The calls came along: each resumed session names its peer, and messages flow both ways.
	byName := map[string]*drained{}
	for _, d := range results {
		byName[d.name] = d
		if want := map[string]string{"alice": "bob", "carol": "dave", "dave": "carol"}[d.name]; d.reply.Peer != want {
			t.Errorf("%s resumed with peer %q, want %q", d.name, d.reply.Peer, want)
		}
	}
	alice, carol, dave := byName["alice"].resumed, byName["carol"].resumed, byName["dave"].resumed
	relay := func(from *client.Client, fromName string, to *client.Client, toName string, n int) {
		t.Helper()
		if err := from.SendCandidate(ctx, toName, cand(n)); err != nil {
			t.Fatal(err)
		}
		// The peer's next message is this candidate: no leave, no error came before it.
		if m := next(t, to); m.Type != protocol.TypeCandidate || m.Name != fromName || string(m.Candidate) != string(cand(n)) {
			t.Fatalf("%s got %+v, want %s's candidate %d", toName, m, fromName, n)
		}
	}
	relay(alice, "alice", bob, "bob", 1)
	relay(bob, "bob", alice, "alice", 2)
	relay(carol, "carol", dave, "dave", 3)
	relay(dave, "dave", carol, "carol", 4)
	if took := time.Since(start); took < window*9/10 {
		t.Fatalf("the drain took %v, less than its window %v", took, window)
	}
}

func cand(n int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"candidate":"candidate:%d 1 udp 1 127.0.0.1 %d typ host","sdpMid":"0"}`, n, 40000+n))
}
