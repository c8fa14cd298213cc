package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/redistest"
	"tandem/protocol"
)

// clusterNode is one real tandem process of a cluster test.
type clusterNode struct {
	cmd    *exec.Cmd
	ws     string // ws://127.0.0.1:port/
	http   string // http://127.0.0.1:port
	exited chan error
}

// Short timings, so that the failure cases take seconds: lease 1 s, grace 1 s.
const (
	testHeartbeat = 200 * time.Millisecond
	testLease     = time.Second
	testGrace     = time.Second
)

// startNode runs tandem as a process in cluster mode on redisURL, and waits until it is ready.
func startNode(t *testing.T, redisURL, id string) *clusterNode {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		"TANDEM_TEST_RUN_MAIN=1",
		"TANDEM_ADDR=127.0.0.1:0",
		"TANDEM_TURN_ADDR=off",
		"TANDEM_ECHO=false",
		"TANDEM_DATA_DIR="+t.TempDir(),
		"TANDEM_LOG_LEVEL=warn",
		"TANDEM_REDIS="+redisURL,
		"TANDEM_NODE_ID="+id,
		"TANDEM_CLUSTER_HEARTBEAT="+testHeartbeat.String(),
		"TANDEM_CLUSTER_LEASE="+testLease.String(),
		"TANDEM_RESUME_GRACE="+testGrace.String(),
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &clusterNode{cmd: cmd, exited: make(chan error, 1)}
	go func() { n.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-n.exited
	})
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`open http://(127\.0\.0\.1:\d+)/`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		n.ws, n.http = "ws://"+a+"/", "http://"+a
	case err := <-n.exited:
		t.Fatalf("node %s exited at start: %v", id, err)
	case <-time.After(15 * time.Second):
		t.Fatalf("node %s did not say where it listens", id)
	}
	n.waitStatus(t, "/readyz", http.StatusOK, 10*time.Second)
	return n
}

// status returns the HTTP status of path on the node.
func (n *clusterNode) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get(n.http + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (n *clusterNode) waitStatus(t *testing.T, path string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := n.status(t, path)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d after %v, want %d", path, got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dialNode(t *testing.T, ctx context.Context, n *clusterNode) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, n.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func loginNode(t *testing.T, ctx context.Context, n *clusterNode, name string) (*client.Client, string) {
	t.Helper()
	c := dialNode(t, ctx, n)
	m, err := c.Login(ctx, name, "")
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return c, m.Token
}

// next reads the next message of type typ (or fails on anything else).
func next(t *testing.T, ctx context.Context, c *client.Client, typ string) *client.Message {
	t.Helper()
	m, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("waiting for %s: %v", typ, err)
	}
	if m.Type != typ {
		t.Fatalf("got %+v, want a %s", m, typ)
	}
	return m
}

func cand(n int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"candidate":"c%d","sdpMid":"0"}`, n))
}

// TestClusterProcesses runs three tandem processes on one real Redis, with real WebSocket clients: a call across
// nodes (every step of the protocol, ordering, busy, the list), a resume on another node, kill -9 of a node, and
// Redis stopped and restarted empty.
func TestClusterProcesses(t *testing.T) {
	r := redistest.Start(t)
	nodes := []*clusterNode{startNode(t, r.URL(), "n0"), startNode(t, r.URL(), "n1"), startNode(t, r.URL(), "n2")}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A call between users of two nodes.
	alice, aliceToken := loginNode(t, ctx, nodes[0], "alice")
	bob, _ := loginNode(t, ctx, nodes[1], "bob")
	if _, err := dialNode(t, ctx, nodes[2]).Login(ctx, "bob", ""); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("a second bob on another node: %v", err)
	}
	if err := alice.SendOffer(ctx, "bob", json.RawMessage(`{"type":"offer","sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
	next(t, ctx, alice, protocol.TypeRinging)
	if m := next(t, ctx, bob, protocol.TypeOffer); m.Name != "alice" || string(m.Offer) != `{"type":"offer","sdp":"v=0"}` {
		t.Fatalf("bob got %+v", m)
	}
	if err := bob.SendAnswer(ctx, "alice", json.RawMessage(`{"type":"answer","sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
	next(t, ctx, alice, protocol.TypeAnswer)
	for i := range 200 {
		if err := alice.SendCandidate(ctx, "bob", cand(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		if m := next(t, ctx, bob, protocol.TypeCandidate); string(m.Candidate) != string(cand(i)) {
			t.Fatalf("candidate %d arrived as %s", i, m.Candidate)
		}
	}
	carol, _ := loginNode(t, ctx, nodes[2], "carol")
	_ = carol.SendOffer(ctx, "bob", json.RawMessage(`{}`))
	if m := next(t, ctx, carol, protocol.TypeError); m.Code != protocol.CodeBusy {
		t.Fatalf("calling bob, in a call on another node: %+v", m)
	}
	_ = carol.SendOffer(ctx, "nobody", json.RawMessage(`{}`))
	if m := next(t, ctx, carol, protocol.TypeError); m.Code != protocol.CodeNotOnline {
		t.Fatalf("calling nobody: %+v", m)
	}
	_ = carol.SendUsers(ctx, "", 10)
	if m := next(t, ctx, carol, protocol.TypeUsers); m.Total != 3 || len(m.Users) != 3 || !m.Users[0].Busy || !m.Users[1].Busy || m.Users[2].Busy {
		t.Fatalf("users: %+v", m)
	}

	// alice reconnects to another node with her token: she takes her name and call along; her old connection is
	// closed with 4000; bob sees only the messages.
	alice2 := dialNode(t, ctx, nodes[2])
	if m, err := alice2.Login(ctx, "alice", aliceToken); err != nil || m.Peer != "bob" {
		t.Fatalf("resume on another node: %+v, %v", m, err)
	}
	if _, err := alice.Read(ctx); !errors.Is(err, client.ErrReplaced) {
		t.Fatalf("the old connection: %v, want closed with 4000", err)
	}
	_ = alice2.SendCandidate(ctx, "bob", cand(1000))
	if m := next(t, ctx, bob, protocol.TypeCandidate); string(m.Candidate) != string(cand(1000)) {
		t.Fatalf("bob got %+v", m)
	}
	_ = bob.SendCandidate(ctx, "alice", cand(1001))
	next(t, ctx, alice2, protocol.TypeCandidate)

	// kill -9 of bob's node: alice is told within lease + sweep + grace; bob's name is free again.
	start := time.Now()
	if err := nodes[1].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, alice2, protocol.TypeLeave); m.Name != "bob" || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("alice got %+v", m)
	}
	if took, bound := time.Since(start), testLease+2*testHeartbeat+testGrace; took > bound+3*time.Second {
		t.Fatalf("alice was told after %v; the bound is %v", took, bound)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialNode(t, ctx, nodes[0])
		if _, err := c.Login(ctx, "bob", ""); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("bob's name is still taken: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Redis goes away: liveness stays, readiness goes, logins get a clear error, no node exits.
	r.Kill()
	nodes[0].waitStatus(t, "/readyz", http.StatusServiceUnavailable, 5*time.Second)
	if got := nodes[0].status(t, "/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz with Redis gone: %d", got)
	}
	if _, err := dialNode(t, ctx, nodes[0]).Login(ctx, "dave", ""); err == nil || !strings.Contains(err.Error(), protocol.CodeUnavailable) {
		t.Fatalf("login with Redis gone: %v", err)
	}
	// Back, empty: the nodes are ready again within seconds, with their users registered again.
	r.StartAgain()
	for _, n := range []*clusterNode{nodes[0], nodes[2]} {
		n.waitStatus(t, "/readyz", http.StatusOK, 10*time.Second)
		select {
		case err := <-n.exited:
			t.Fatalf("a node exited: %v", err)
		default:
		}
	}
	if _, err := dialNode(t, ctx, nodes[0]).Login(ctx, "alice", ""); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("alice's name after Redis came back: %v", err)
	}
	dave, _ := loginNode(t, ctx, nodes[0], "dave")
	_ = dave.SendOffer(ctx, "carol", json.RawMessage(`{}`))
	next(t, ctx, dave, protocol.TypeRinging)
	next(t, ctx, carol, protocol.TypeOffer)
}
