package rediscluster

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tandem/internal/cluster"
	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
	"tandem/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConfig has the short timings of the tests: a dead node is noticed within about a second.
func testConfig(url, prefix, node string) Config {
	return Config{URL: url, Prefix: prefix, Node: node, Heartbeat: 100 * time.Millisecond, Lease: 500 * time.Millisecond,
		Probe: 200 * time.Millisecond, ResumeGrace: time.Second, Timeout: 2 * time.Second,
		SentinelRefresh: 200 * time.Millisecond}
}

// factory makes hubs of one cluster on r, each test with its own key prefix.
func factory(r *redistest.Server) hubtest.Factory {
	n := 0
	return func(t *testing.T, nodes int, cfg hub.Config) []*hub.Hub {
		n++
		prefix := fmt.Sprintf("t%d:", n)
		var hubs []*hub.Hub
		for i := range nodes {
			b, err := New(testConfig(r.URL(), prefix, fmt.Sprint("node", i)))
			if err != nil {
				t.Fatal(err)
			}
			c := cfg
			c.Cluster, c.ResumeGrace = b, time.Second
			h := hub.New(c)
			if err := h.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.Shutdown)
			waitReady(t, h)
			hubs = append(hubs, h)
		}
		return hubs
	}
}

func waitReady(t *testing.T, h *hub.Hub) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the node is not ready after 10 s: %v", h.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRoutingRedis runs the routing suite on three nodes of one cluster on a real redis-server.
func TestRoutingRedis(t *testing.T) {
	hubtest.Run(t, factory(redistest.Start(t)))
}

func TestEnvelopeCoding(t *testing.T) {
	e := cluster.Envelope{Kind: cluster.Verdict, Accepted: true, Forwarded: true, From: "ålice", FromNode: "n1",
		FromSession: "s", Caller: 1 << 62, To: "bob", ToSession: "t", Frame: []byte(`{"type":"ringing"}`)}
	var d cluster.Envelope
	if err := decode(encode(&e), &d); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d) != fmt.Sprint(e) {
		t.Fatalf("decoded %v, want %v", d, e)
	}
	for _, bad := range [][]byte{nil, {1, 2}, {2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, append(encode(&e)[:12], 200)} {
		if decode(bad, &d) == nil {
			t.Errorf("decoded %v", bad)
		}
	}
}
