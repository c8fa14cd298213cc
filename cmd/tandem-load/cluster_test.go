package main

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/internal/cluster/rediscluster"
	"tandem/internal/redistest"
	"tandem/internal/server"
	"tandem/internal/servertest"
)

// startNodes runs n tandem nodes of one cluster on a private redis-server, in the test process, without the
// per-connection rate limit.
func startNodes(t *testing.T, n int) []*servertest.Server {
	t.Helper()
	r := redistest.Start(t)
	nodes := make([]*servertest.Server, n)
	for i := range nodes {
		b, err := rediscluster.New(rediscluster.Config{URL: r.URL(), Node: "node" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = servertest.Start(t, func(c *server.Config) { c.Rate, c.Cluster = 0, b })
	}
	for _, n := range nodes {
		awaitReady(t, n)
	}
	return nodes
}

// awaitReady waits until the node says it can take new users (registered in Redis and subscribed).
func awaitReady(t *testing.T, n *servertest.Server) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(n.HTTP() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready after 15 s (%v)", n.Addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling an observable condition: the node's readiness
	}
}

// crossNode is how many messages the nodes have published to one another so far.
func crossNode(t *testing.T, nodes []*servertest.Server) float64 {
	t.Helper()
	var sum float64
	for _, n := range nodes {
		sum += servertest.Metrics(t, n.HTTP()+"/metrics")["tandem_cluster_messages_sent_total"]
	}
	return sum
}

// With several -url, the users are spread over the nodes so that every pair's two users are on different nodes:
// each relayed message crosses from one node to the other. With several -pid, the CPU time is their sum.
func TestClusterRelay(t *testing.T) {
	nodes := startNodes(t, 2)
	urls := nodes[0].URL + "," + nodes[1].URL
	pid := strconv.Itoa(os.Getpid())
	before := crossNode(t, nodes)
	res := runJSON(t, nil, "-url", urls, "-pid", pid+","+pid, "-scenario", "relay", "-users", "10",
		"-warmup", "100ms", "-duration", "1s", "-timeout", "20s")
	if res.Messages == 0 || res.Errors != 0 || res.Stalled != 0 {
		t.Fatalf("relayed %d messages, %d errors, %d stalled pairs", res.Messages, res.Errors, res.Stalled)
	}
	// Every message of the run crossed, the warm-up's and those after the measurement included; within the
	// nodes' own few (a probe is published only to the node itself, and is not counted).
	if crossed := crossNode(t, nodes) - before; crossed < float64(res.Messages) {
		t.Errorf("%.0f messages crossed nodes, fewer than the %d relayed: the pairs were not spread", crossed, res.Messages)
	}
	if len(res.Processes) != 2 || res.Processes[0].PID != os.Getpid() {
		t.Fatalf("processes %+v, want the two given", res.Processes)
	}
	if sum := res.Processes[0].CPU + res.Processes[1].CPU; res.ServerCPU <= 0 || sum != res.ServerCPU {
		t.Errorf("server CPU %.3f s, the processes' %.3f + %.3f", res.ServerCPU, res.Processes[0].CPU, res.Processes[1].CPU)
	}
}

// The users of the other scenarios are spread evenly, and the list scenario asks every node for the list: each
// sees the whole cluster's users.
func TestClusterLoginAndList(t *testing.T) {
	nodes := startNodes(t, 3)
	urls := nodes[0].URL + "," + nodes[1].URL + "," + nodes[2].URL
	pid := strconv.Itoa(os.Getpid())
	res := runJSON(t, nil, "-url", urls, "-pid", pid, "-scenario", "login", "-users", "30", "-concurrency", "5",
		"-prefix", "spread-")
	if res.Logins != 30 || res.Processes != nil {
		t.Fatalf("%d logins, processes %+v", res.Logins, res.Processes)
	}
	for i, n := range nodes {
		m := servertest.Metrics(t, n.HTTP()+"/metrics")
		if got := m["tandem_logins_total"]; got < 10 {
			t.Errorf("node %d: %v logins, want at least 10 of the 30", i, got)
		}
	}

	res = runJSON(t, nil, "-url", urls, "-scenario", "list", "-online", "24", "-query", "LIST-idle1",
		"-prefix", "list-", "-duration", "300ms", "-timeout", "20s")
	l := res.List
	if l == nil || l.Lists == 0 || l.Searches == 0 || l.Refused != 0 {
		t.Fatalf("list report %+v", l)
	}
	// 24 idle users and one asking on each of the 3 nodes; the search finds idle1 and idle10 to idle19.
	if l.Total != 27 || l.TotalMin != 27 || l.Found != 11 || l.FoundMore {
		t.Errorf("total %d (min %d), found %d (more: %v); want 27 and 11", l.Total, l.TotalMin, l.Found, l.FoundMore)
	}
	if res.Latency.Count != int(l.Lists) || l.SearchLatency.Count != int(l.Searches) {
		t.Errorf("%d latencies for %d lists, %d for %d searches", res.Latency.Count, l.Lists, l.SearchLatency.Count, l.Searches)
	}
	if !strings.Contains(res.URL, ",") {
		t.Errorf("report's url %q, want the list given", res.URL)
	}
}
