package rediscluster

import (
	"fmt"
	"testing"
	"time"

	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
	"tandem/internal/redistest"
)

// crash stops the backend as a killed process would stop: no more heartbeats, no more messages, nothing said
// to Redis (its lease runs out on its own).
func (b *Backend) crash() {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
	b.client.Close()
}

type node struct {
	h *hub.Hub
	b *Backend
}

func startNodes(t *testing.T, r *redistest.Server, n int) []node {
	t.Helper()
	var nodes []node
	for i := range n {
		b, err := New(testConfig(r.URL(), "f:", fmt.Sprint("node", i)))
		if err != nil {
			t.Fatal(err)
		}
		c := hubtest.Config()
		c.Cluster, c.ResumeGrace = b, b.cfg.ResumeGrace
		h := hub.New(c)
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Shutdown)
		waitReady(t, h)
		nodes = append(nodes, node{h, b})
	}
	return nodes
}

// call sets up an answered call between a new user of x and one of y.
func call(t *testing.T, x, y *hub.Hub, caller, callee string) (*hubtest.Client, *hubtest.Client) {
	a, b := hubtest.Connect(t, x), hubtest.Connect(t, y)
	a.Login(caller)
	b.Login(callee)
	a.Send(`{"type":"offer","offer":{},"name":"` + callee + `"}`)
	a.Expect(map[string]any{"type": "ringing"})
	b.Expect(map[string]any{"type": "offer"})
	b.Send(`{"type":"answer","answer":{},"name":"` + caller + `"}`)
	a.Expect(map[string]any{"type": "answer"})
	return a, b
}

// loginWithin logs a new client of h in as name, retrying until it succeeds or the deadline passes.
func loginWithin(t *testing.T, h *hub.Hub, name, token string, d time.Duration) *hubtest.Client {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		u := hubtest.Connect(t, h)
		u.Send(`{"type":"login","name":"` + name + `","token":"` + token + `"}`)
		m := u.Next()
		if m["success"] == true {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("login %s: still %v after %v", name, m, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNodeKilled: a node dies without a word. Its users' peers on other nodes are told (leave, disconnected)
// within the lease, a sweep and the resume grace; its users' names are free and out of the list by then; and a
// user who resumes on another node within the grace keeps the call, its peer told nothing.
func TestNodeKilled(t *testing.T) {
	r := redistest.Start(t)
	nodes := startNodes(t, r, 3)
	alice, bob := call(t, nodes[0].h, nodes[1].h, "alice", "bob")
	carol, dave := call(t, nodes[0].h, nodes[1].h, "carol", "dave")
	daveToken := dave.LoginToken("dave", "")
	_ = bob
	start := time.Now()
	nodes[1].b.crash()

	// dave resumes on node 2 within the grace: the call goes on.
	dave2 := loginWithin(t, nodes[2].h, "dave", daveToken, 3*time.Second)
	// (dave's node told carol's that dave moved before dave could send anything: once carol has dave's message,
	// her node knows where dave is.)
	dave2.Send(`{"type":"candidate","candidate":{"n":2},"name":"carol"}`)
	carol.Expect(map[string]any{"type": "candidate", "name": "dave"})
	carol.Send(`{"type":"candidate","candidate":{"n":1},"name":"dave"}`)
	dave2.Expect(map[string]any{"type": "candidate", "name": "carol"})

	// bob does not come back: alice is told, within lease + heartbeat + grace (and some slack for a loaded machine).
	alice.Expect(map[string]any{"type": "leave", "name": "bob", "reason": "disconnected"})
	bound := nodes[0].b.cfg.Lease + nodes[0].b.cfg.Heartbeat + nodes[0].b.cfg.ResumeGrace
	if took := time.Since(start); took > bound+2*time.Second {
		t.Fatalf("alice was told after %v; the bound is %v", took, bound)
	}
	// bob's name is free, and gone from the list.
	loginWithin(t, nodes[2].h, "bob", "", 2*time.Second)
	q := hubtest.Connect(t, nodes[0].h)
	deadline := time.Now().Add(5 * time.Second)
	for {
		q.Send(`{"type":"users"}`)
		m := q.Next()
		if fmt.Sprint(m["users"]) == "[map[busy:false name:alice] map[busy:false name:bob] map[busy:true name:carol] map[busy:true name:dave]]" && m["total"] == 4.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("users after the node died: %v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	carol.Expect()
}

// TestRedisRestartedEmpty: Redis goes away and comes back empty. Meanwhile calls within one node go on; what
// needs Redis answers unavailable; no node fails. Once Redis is back, every node registers its users again
// within seconds: the list is whole, the names are held, and calls across nodes work again.
func TestRedisRestartedEmpty(t *testing.T) {
	r := redistest.Start(t)
	nodes := startNodes(t, r, 2)
	alice, bob := call(t, nodes[0].h, nodes[1].h, "alice", "bob")
	carol, dave := call(t, nodes[0].h, nodes[0].h, "carol", "dave")

	r.Kill()
	// A call within one node does not notice.
	carol.Send(`{"type":"candidate","candidate":{},"name":"dave"}`)
	dave.Expect(map[string]any{"type": "candidate", "name": "carol"})
	// A login, a list and a message to another node get a clear error.
	u := hubtest.Connect(t, nodes[0].h)
	u.Send(`{"type":"login","name":"erin"}`)
	u.Expect(map[string]any{"type": "login", "success": false, "code": "unavailable"})
	alice.Send(`{"type":"users"}`)
	alice.Expect(map[string]any{"type": "error", "code": "unavailable", "request": "users"})
	alice.Send(`{"type":"candidate","candidate":{},"name":"bob"}`)
	alice.Expect(map[string]any{"type": "error", "code": "unavailable", "request": "candidate", "name": "bob"})
	// The nodes say they cannot take new users (after their lease lapses), and keep running.
	deadline := time.Now().Add(5 * time.Second)
	for nodes[0].h.Ready() == nil || nodes[1].h.Ready() == nil {
		if time.Now().After(deadline) {
			t.Fatal("a node still says it is ready with Redis gone")
		}
		time.Sleep(20 * time.Millisecond)
	}

	r.StartAgain()
	for _, n := range nodes {
		waitReady(t, n.h)
	}
	// Registered again: the names are held, the list is whole, and a call across nodes works.
	thief := hubtest.Connect(t, nodes[1].h)
	thief.Send(`{"type":"login","name":"alice"}`)
	thief.Expect(map[string]any{"success": false, "code": "name_taken"})
	q := hubtest.Connect(t, nodes[1].h)
	q.Send(`{"type":"users"}`)
	if m := q.Next(); m["total"] != 4.0 {
		t.Fatalf("users after Redis came back: %v", m)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		bob.Send(`{"type":"candidate","candidate":{"n":7},"name":"alice"}`)
		m := alice.Next()
		if m["type"] == "candidate" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis came back, bob's candidate got %v", m)
		}
	}
}

// TestSubscriptionKilled: Redis drops the nodes' subscription connections; the nodes subscribe again by
// themselves and messages across nodes flow again.
func TestSubscriptionKilled(t *testing.T) {
	r := redistest.Start(t)
	nodes := startNodes(t, r, 2)
	alice, bob := call(t, nodes[0].h, nodes[1].h, "alice", "bob")
	if got := r.Do("CLIENT", "KILL", "TYPE", "pubsub"); got != ":2" {
		t.Fatalf("CLIENT KILL TYPE pubsub: %s", got)
	}
	// The outbox retries while the other node subscribes again: nothing is lost, nothing is reordered.
	for i := range 20 {
		alice.Send(fmt.Sprintf(`{"type":"candidate","candidate":{"n":%d},"name":"bob"}`, i))
	}
	for i := range 20 {
		if m := bob.Next(); m["candidate"].(map[string]any)["n"] != float64(i) {
			t.Fatalf("candidate %d: %v", i, m)
		}
	}
	alice.Expect()
	bob.Send(`{"type":"candidate","candidate":{"n":99},"name":"alice"}`)
	alice.Expect(map[string]any{"type": "candidate", "name": "bob"})
}
