package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/cluster/rediscluster"
	"tandem/internal/redistest"
	"tandem/internal/server"
)

// spreader is a small load balancer for the tests: a TCP proxy on 127.0.0.1 that passes each new connection to
// one of the nodes, in turn, skipping a node that does not accept (one that is restarting). pin, when it is a
// node's index, makes new connections go to that node first (the test places its users with it).
type spreader struct {
	t     *testing.T
	ln    net.Listener
	nodes []string
	next  atomic.Uint32
	pin   atomic.Int32

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startSpreader(t *testing.T, nodes ...string) *spreader {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &spreader{t: t, ln: ln, nodes: nodes, conns: map[net.Conn]struct{}{}}
	s.pin.Store(-1)
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *spreader) url() string { return "http://" + s.ln.Addr().String() }

func (s *spreader) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.serve(c)
	}
}

// track remembers c for close; false when the spreader is closed.
func (s *spreader) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *spreader) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *spreader) serve(client net.Conn) {
	defer s.wg.Done()
	defer client.Close()
	if !s.track(client) {
		return
	}
	defer s.untrack(client)
	first := int(s.next.Add(1)) % len(s.nodes)
	if pin := int(s.pin.Load()); pin >= 0 {
		first = pin
	}
	var node net.Conn
	for i := range s.nodes {
		c, err := net.DialTimeout("tcp", s.nodes[(first+i)%len(s.nodes)], time.Second)
		if err == nil {
			node = c
			break
		}
	}
	if node == nil {
		return // no node accepts: the browser sees the connection fail
	}
	defer node.Close()
	if !s.track(node) {
		return
	}
	defer s.untrack(node)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(node, client)
	go pipe(client, node)
	<-done // one side ended: end both
	client.Close()
	node.Close()
	<-done
}

func (s *spreader) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}

// closesJS records the close codes of the page's WebSocket connections in window.tandemCloses.
const closesJS = `(() => {
	window.tandemCloses = [];
	const Base = window.WebSocket;
	window.WebSocket = class extends Base {
		constructor(...args) {
			super(...args);
			this.addEventListener('close', (ev) => window.tandemCloses.push(ev.code));
		}
	};
})();`

// clusterNode makes a server a node of the cluster on the Redis at url, with a short drain window. The lease is
// generous (3 s, heartbeats every 500 ms): no test here waits for one to run out, and at 1 s a loaded machine let
// both nodes' leases lapse at once (each then took the other for dead).
func clusterNode(url, id string) func(*server.Config) {
	return func(cfg *server.Config) {
		b, err := rediscluster.New(rediscluster.Config{URL: url, Node: id, Heartbeat: 500 * time.Millisecond,
			Lease: 3 * time.Second, ResumeGrace: 5 * time.Second})
		if err != nil {
			panic(fmt.Sprintf("rediscluster: %v", err)) // only a malformed URL fails here
		}
		cfg.Cluster, cfg.ResumeGrace, cfg.DrainWindow = b, 5*time.Second, 2*time.Second
	}
}

// TestRollingRestart has two browsers in a call through two cluster nodes behind a load balancer, and restarts
// the node one of them is on: that page is told to reconnect (1012), comes back through the load balancer on the
// other node with its token, and the call goes on: the same peer connection, media still flowing both ways, chat
// working both ways. Then the restarted node takes new users again.
func TestRollingRestart(t *testing.T) {
	requireBrowser(t)
	r := redistest.Start(t)
	nodes := []*tandem{startTandem(t, clusterNode(r.URL(), "node0")), startTandem(t, clusterNode(r.URL(), "node1"))}
	lb := startSpreader(t, nodes[0].addr, nodes[1].addr)

	open := func(name string, node int) *page {
		t.Helper()
		lb.pin.Store(int32(node))
		p := openPage(t, name, lb.url()+"/", withScript(closesJS))
		p.signIn(name)
		p.waitFor("signed in", `tandem.signaling === 'online'`)
		lb.pin.Store(-1)
		return p
	}
	alice, bob := open("alice", 0), open("bob", 1)
	if a, b := nodes[0].server.Online(), nodes[1].server.Online(); a != 1 || b != 1 {
		t.Fatalf("users on the nodes: %d and %d, want one each", a, b)
	}
	connect(t, alice, bob)
	chat := func(from, to *page, text string) {
		t.Helper()
		from.waitFor("chat ready", `tandem.chatReady && !document.querySelector('#chat-input').disabled`)
		from.must(fmt.Sprintf(`(() => {
			document.querySelector('#chat-input').value = %s;
			document.querySelector('#chat-form').requestSubmit();
		})()`, jsString(text)))
		to.waitFor(fmt.Sprintf("the message %q", text), fmt.Sprintf(
			`[...document.querySelectorAll('#chat-log .msg-them .msg-text')].some((e) => e.textContent === %s)`, jsString(text)))
	}
	chat(alice, bob, "before the restart")
	for _, p := range []*page{alice, bob} {
		p.must(`window.callBefore = tandem.call; window.pcBefore = tandem.pc; window.phases = [];
			window.phaseWatch = setInterval(() => { if (tandem.phase !== 'active') window.phases.push(tandem.phase); }, 20);`)
	}

	// Restart node 0, alice's: it drains (SIGTERM for Serve), then a new node starts on its address.
	start := time.Now()
	nodes[0].stop()
	drained := time.Since(start)
	alice.waitFor("alice back online", `tandem.signaling === 'online'`)
	back := time.Since(start)
	if got := value[[]int](alice, `window.tandemCloses`); len(got) != 1 || got[0] != 1012 {
		t.Fatalf("alice's page saw its connections close with %v, want one 1012", got)
	}
	// Moved, not lost: the page does not tell its user the connection was lost.
	if n := alice.notices(); strings.Contains(n, "Lost the connection") {
		t.Fatalf("alice's page says %q; a restart that moved her is not a lost connection", n)
	}
	if n := nodes[1].server.Online(); n != 2 {
		t.Fatalf("node 1 has %d users, want alice and bob", n)
	}
	t.Logf("node 0 drained in %v; alice was online again on node 1 %v after the restart began", drained, back)
	ln, err := net.Listen("tcp", nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	clusterNode(r.URL(), "node0-again")(&nodes[0].cfg)
	nodes[0].serve(ln)

	// The call is the same one, and it carries on: media both ways, chat both ways.
	for _, p := range []*page{alice, bob} {
		if same := value[bool](p, `tandem.call === window.callBefore && tandem.pc === window.pcBefore && tandem.phase === 'active'`); !same {
			p.fatalf("%s's call did not survive the restart", p.label)
		}
		if phases := value[[]string](p, `(clearInterval(window.phaseWatch), window.phases)`); len(phases) > 0 {
			p.fatalf("%s's call left the active phase: %v", p.label, phases)
		}
		p.assertMedia(tandemMedia)
	}
	chat(alice, bob, "after the restart, from alice")
	chat(bob, alice, "after the restart, from bob")
	if got := value[[]int](bob, `window.tandemCloses`); len(got) != 0 {
		t.Fatalf("bob's connection was closed (%v); only alice's node restarted", got)
	}

	// The restarted node serves again: a new user lands on it.
	open("carol", 0)
	if n := nodes[0].server.Online(); n != 1 {
		t.Fatalf("the restarted node has %d users, want carol", n)
	}
}
