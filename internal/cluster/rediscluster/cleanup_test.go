package rediscluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"tandem/internal/cluster"
	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
	"tandem/internal/redistest"
)

// Orphans and Holders make the bus benchmark's Local a cluster.Local: it has no users, and frees nothing.
func (c *counting) Orphans([]cluster.Record) []cluster.Record { return nil }
func (c *counting) Holders(string, int) []cluster.Record      { return nil }

// Holders makes the packs' recorder a cluster.Local: it has no users.
func (r *recorder) Holders(string, int) []cluster.Record { return nil }

// startNode starts a hub on a backend with cfg, and waits until it is ready.
func startNode(t *testing.T, cfg Config, hcfg hub.Config) node {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hcfg.Cluster, hcfg.ResumeGrace = b, b.cfg.ResumeGrace
	h := hub.New(hcfg)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Shutdown)
	waitReady(t, h)
	return node{h, b}
}

// testClient is a Redis client of the test's own, straight to r, for looking at and writing keys.
func testClient(t *testing.T, r *redistest.Server) rueidis.Client {
	t.Helper()
	c, err := NewClient(Config{URL: r.URL(), Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// record returns the node and session id of name's record ("" for none).
func record(t *testing.T, c rueidis.Client, prefix, name string) (node, sid string) {
	t.Helper()
	vals, err := c.Do(context.Background(), c.B().Hmget().Key(prefix+"u:"+name).Field("node", "sid").Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	node, _ = vals[0].ToString()
	sid, _ = vals[1].ToString()
	return node, sid
}

// claimAs runs the claim script for name as node b with session sid, as a claim whose reply never reached the
// hub would have: Redis holds the name for a session the hub does not have.
func claimAs(t *testing.T, c rueidis.Client, b *Backend, name, sid string) {
	t.Helper()
	res, err := claimScript.Exec(context.Background(), c, nil, []string{b.cfg.Prefix, name, b.idxMember(name),
		b.cfg.Node, b.inc, sid, "", hashToken("late-token"), "7"}).AsStrSlice()
	if err != nil || len(res) != 1 || res[0] != "claimed" {
		t.Fatalf("claim script: %v %v", res, err)
	}
}

// TestCleanupFreesOrphans: Redis holds names for sessions of a node that has no such session (a claim whose
// reply came after the hub's deadline; a release a failover lost), and a member of the node's set whose record
// is gone. The node's cleanup pass frees them: another user can then take the name, through another node. The
// node's live users (one in a call with a user of another node, one resumed from another node, one idle) keep
// their records as they were, and the list shows them as before.
func TestCleanupFreesOrphans(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	reg := prometheus.NewRegistry()
	cfg0 := testConfig(r.URL(), "c:", "node0")
	cfg0.Cleanup = 100 * time.Millisecond
	n0 := startNode(t, cfg0, hubtest.Config())
	n0.b.Register(reg)
	cfg1 := testConfig(r.URL(), "c:", "node1")
	cfg1.Cleanup = -1
	n1 := startNode(t, cfg1, hubtest.Config())

	alice, _ := call(t, n0.h, n1.h, "alice", "bob")
	carol := hubtest.Connect(t, n0.h)
	carol.Login("carol")
	dave := hubtest.Connect(t, n1.h)
	daveToken := dave.Login("dave")
	dave2 := hubtest.Connect(t, n0.h) // dave resumes on node 0
	dave2.LoginToken("dave", daveToken)
	if code := dave.Closed(); code != 4000 {
		t.Fatalf("dave's first connection closed with %d", code)
	}
	live := map[string]string{}
	for _, name := range []string{"alice", "carol", "dave"} {
		node, sid := record(t, rc, "c:", name)
		if node != "node0" || sid == "" {
			t.Fatalf("%s's record: node %q, sid %q", name, node, sid)
		}
		live[name] = sid
	}

	// The orphans: two late claims of node 0, and a stale member of its set.
	claimAs(t, rc, n0.b, "zed", "a-session-node0-never-had")
	claimAs(t, rc, n0.b, "Yan", "another-one")
	if err := rc.Do(context.Background(), rc.B().Sadd().Key("c:n:node0").Member("ghost").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	u := hubtest.Connect(t, n1.h)
	u.Send(`{"type":"login","name":"zed"}`)
	u.Expect(map[string]any{"type": "login", "success": false, "code": "name_taken"})

	// The pass frees them; zed can then log in on node 1.
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, reg, "tandem_cluster_orphans_freed_total") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the cleanup pass freed %v names in 10 s", counter(t, reg, "tandem_cluster_orphans_freed_total"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	u.Send(`{"type":"login","name":"zed"}`)
	u.Expect(map[string]any{"type": "login", "success": true, "name": "zed"})
	if node, sid := record(t, rc, "c:", "yan"); node != "" || sid != "" {
		t.Fatalf("Yan's record is still there: %s %s", node, sid)
	}
	if ok, err := rc.Do(context.Background(), rc.B().Sismember().Key("c:n:node0").Member("ghost").Build()).AsBool(); err != nil || ok {
		t.Fatalf("the stale member is still in the node's set (%v)", err)
	}

	// More passes change nothing for the live users.
	before := counter(t, reg, "tandem_cluster_orphans_freed_total")
	if res, err := n0.b.cleanup(); err != nil || res.freed != 0 || res.scanned != 3 || res.evicted != 0 {
		t.Fatalf("a pass over the live users: %+v, %v", res, err)
	}
	for name, sid := range live {
		if node, got := record(t, rc, "c:", name); node != "node0" || got != sid {
			t.Fatalf("%s's record became node %q, sid %q", name, node, got)
		}
	}
	if after := counter(t, reg, "tandem_cluster_orphans_freed_total"); after != before || before != 2 {
		t.Fatalf("orphans freed: %v, then %v; want 2", before, after)
	}
	q := hubtest.Connect(t, n1.h)
	q.Send(`{"type":"users"}`)
	q.Expect(map[string]any{"type": "users", "total": 5, "users": "[map[busy:true name:alice] map[busy:true name:bob] " +
		"map[busy:false name:carol] map[busy:false name:dave] map[busy:false name:zed]]"})
	alice.Send(`{"type":"candidate","candidate":{},"name":"bob"}`)
	for _, name := range []string{"alice", "carol", "dave"} {
		thief := hubtest.Connect(t, n1.h)
		thief.Send(`{"type":"login","name":"` + name + `"}`)
		thief.Expect(map[string]any{"type": "login", "success": false, "code": "name_taken"})
	}
	carol.Expect()
}

// holdProxy is a TCP proxy on 127.0.0.1 in front of a test's redis-server that, once armed with a marker, holds
// back Redis's replies on the connection that next sends the marker (what the node sends still reaches Redis):
// a command that Redis has run, whose reply the node has not had yet.
type holdProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	marker []byte // armed: the connection that sends it is held
	held   *held
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type held struct {
	mu      sync.Mutex
	client  net.Conn
	holding bool
	buf     []byte // what Redis said meanwhile
}

func startHoldProxy(t *testing.T, r *redistest.Server) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: r.Socket(), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *holdProxy) url() string { return "redis://" + p.ln.Addr().String() + "/0" }

// arm makes the next connection that sends marker be held.
func (p *holdProxy) arm(marker string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marker = []byte(marker)
}

// release lets what was held, and what follows, through.
func (p *holdProxy) release() {
	p.mu.Lock()
	h := p.held
	p.held = nil
	p.mu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = h.client.Write(h.buf)
	h.holding, h.buf = false, nil
}

func (p *holdProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		h := &held{client: c}
		go p.up(c, s, h)
		go p.down(c, s, h)
	}
}

func (p *holdProxy) up(c, s net.Conn, h *held) {
	defer p.wg.Done()
	defer c.Close()
	defer s.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.marker != nil && bytes.Contains(buf[:n], p.marker) {
				p.marker, p.held = nil, h
				h.mu.Lock()
				h.holding = true // before Redis can answer
				h.mu.Unlock()
			}
			p.mu.Unlock()
			if _, err := s.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) down(c, s net.Conn, h *held) {
	defer p.wg.Done()
	defer c.Close()
	defer s.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			h.mu.Lock()
			if h.holding {
				h.buf = append(h.buf, buf[:n]...)
			} else if _, werr := c.Write(buf[:n]); werr != nil {
				h.mu.Unlock()
				return
			}
			h.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// proxiedConfig is the configuration of a node behind a holdProxy: a lease long enough that holding its replies
// for a moment does not cost it its lease, and no cleanup pass of its own (the test runs it).
func proxiedConfig(url, node string) Config {
	c := testConfig(url, "h:", node)
	c.Heartbeat, c.Lease, c.Probe, c.Cleanup = 500*time.Millisecond, 5*time.Second, time.Second, -1
	return c
}

// TestCleanupSparesClaimInFlight: a login's claim has run in Redis but its reply has not reached the hub yet
// (held back by the proxy). A cleanup pass then finds a record of the node for a session the node does not
// have yet: it must leave it alone. When the reply arrives the user is logged in, and holds the name.
func TestCleanupSparesClaimInFlight(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	proxy := startHoldProxy(t, r)
	hcfg := hubtest.Config()
	hcfg.ClusterTimeout = 30 * time.Second // the claim waits as long as the test holds it
	n0 := startNode(t, proxiedConfig(proxy.url(), "node0"), hcfg)
	n1 := startNode(t, proxiedConfig(r.URL(), "node1"), hubtest.Config())
	carol := hubtest.Connect(t, n0.h)
	carol.Login("carol") // (and Redis has the claim script: the held claim is run at once, not refused NOSCRIPT)

	proxy.arm("zoe")
	u := hubtest.Connect(t, n0.h)
	u.S.OnText([]byte(`{"type":"login","name":"zoe"}`)) // its reply is held: no waiting for it
	deadline := time.Now().Add(10 * time.Second)
	var sid string
	for {
		var node string
		if node, sid = record(t, rc, "h:", "zoe"); node == "node0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim has not run in Redis after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	res, err := n0.b.cleanup()
	if err != nil || res.freed != 0 || res.scanned != 2 {
		t.Fatalf("the pass with a claim in flight: %+v, %v", res, err)
	}
	if node, got := record(t, rc, "h:", "zoe"); node != "node0" || got != sid {
		t.Fatalf("the claim in flight's record became node %q, sid %q", node, got)
	}

	proxy.release()
	u.Expect(map[string]any{"type": "login", "success": true, "name": "zoe"})
	if res, err := n0.b.cleanup(); err != nil || res.freed != 0 {
		t.Fatalf("a pass after the login: %+v, %v", res, err)
	}
	thief := hubtest.Connect(t, n1.h)
	thief.Send(`{"type":"login","name":"zoe"}`)
	thief.Expect(map[string]any{"type": "login", "success": false, "code": "name_taken"})
	if node, got := record(t, rc, "h:", "zoe"); node != "node0" || got != sid {
		t.Fatalf("zoe's record became node %q, sid %q", node, got)
	}
}

// TestLateClaimUndone: Redis runs a login's claim, but its reply comes after the hub's deadline: the user is told
// unavailable, and the name must not stay taken by nobody. The hub releases it at once (fenced by the claim's
// session), without waiting for a cleanup pass (there is none here): another user can take it through another
// node while the late reply is still held back.
func TestLateClaimUndone(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	proxy := startHoldProxy(t, r)
	hcfg := hubtest.Config()
	hcfg.ClusterTimeout = 300 * time.Millisecond
	n0 := startNode(t, proxiedConfig(proxy.url(), "node0"), hcfg)
	n1 := startNode(t, proxiedConfig(r.URL(), "node1"), hubtest.Config())
	// (Redis has the claim and release scripts now: the held ones are run at once, not refused NOSCRIPT.)
	carol := hubtest.Connect(t, n0.h)
	carol.Login("carol")
	carol.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if node, _ := record(t, rc, "h:", "carol"); node == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("carol's name is still held 10 s after she left")
		}
	}

	proxy.arm("zoe")
	u := hubtest.Connect(t, n0.h)
	u.Send(`{"type":"login","name":"zoe"}`)
	u.Expect(map[string]any{"type": "login", "success": false, "code": "unavailable"})
	v := loginWithin(t, n1.h, "zoe", "", 5*time.Second)
	v.Expect()
	proxy.release()
	if node, _ := record(t, rc, "h:", "zoe"); node != "node1" {
		t.Fatalf("zoe's record is node %q's", node)
	}
}

// holdsAll is a Local whose sessions hold every record (Orphans finds none), for measuring a pass by itself: its
// users are recs, in order.
type holdsAll struct {
	counting
	recs []cluster.Record
}

func (holdsAll) Orphans([]cluster.Record) []cluster.Record { return nil }

func (l *holdsAll) Holders(after string, limit int) []cluster.Record {
	i := sort.Search(len(l.recs), func(i int) bool { return l.recs[i].Name > after })
	return l.recs[i:min(i+limit, len(l.recs))]
}

// BenchmarkCleanupPass measures one cleanup pass over a node holding 20,000 names in a real redis-server: the
// SSCAN chunks with their sessions, read in Redis, and the hub's answer (here: all held); then the check of the
// node's 20,000 users against their records (here: all theirs). The hub's part is BenchmarkCleanupPassHub's.
func BenchmarkCleanupPass(b *testing.B) {
	r := redistest.Start(b)
	cfg := testConfig(r.URL(), "bench:", "node0")
	cfg.Cleanup = -1
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	const users = 20000
	local := &holdsAll{counting: counting{got: make(chan struct{}, 1)}}
	for i := range users {
		name := fmt.Sprintf("user%05d", i)
		local.recs = append(local.recs, cluster.Record{Name: name, Session: "sid" + name})
	}
	if err := n.Start(local); err != nil {
		b.Fatal(err)
	}
	defer n.Close(true)
	execs := make([]rueidis.LuaExec, 0, users)
	for i := range users {
		name := fmt.Sprintf("user%05d", i)
		execs = append(execs, rueidis.LuaExec{Args: []string{cfg.Prefix, name, n.idxMember(name), cfg.Node, n.inc,
			"sid" + name, "", hashToken("t"), "1"}})
	}
	for _, res := range claimScript.ExecMulti(context.Background(), n.client, execs...) {
		if err := res.Error(); err != nil {
			b.Fatal(err)
		}
	}
	// evalTime is the time Redis spent in EVAL so far (its own count, INFO commandstats), in microseconds.
	evalTime := func() float64 {
		info, err := n.client.Do(context.Background(), n.client.B().Info().Section("commandstats").Build()).ToString()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_eval:"); ok {
				for _, f := range strings.Split(rest, ",") {
					if v, ok := strings.CutPrefix(f, "usec="); ok {
						us, _ := strconv.ParseFloat(v, 64)
						return us
					}
				}
			}
		}
		return 0
	}
	before := evalTime()
	b.ResetTimer()
	for b.Loop() {
		res, err := n.cleanup()
		if err != nil || res.freed != 0 || res.scanned < users || res.checked != users || res.evicted != 0 {
			b.Fatalf("%+v, %v", res, err)
		}
	}
	b.ReportMetric((evalTime()-before)/float64(b.N), "redis-µs/pass")
}

// resumeAs runs the claim script for name as a resume with token on node b, session sid, as a resume whose reply
// never reached b's hub would have: Redis gives the name to a session that b's hub does not have, and b never
// tells the old session's node (no Takeover).
func resumeAs(t *testing.T, c rueidis.Client, b *Backend, name, sid, token string) {
	t.Helper()
	res, err := claimScript.Exec(context.Background(), c, nil, []string{b.cfg.Prefix, name, b.idxMember(name),
		b.cfg.Node, b.inc, sid, hashToken(token), hashToken("late-token"), "7"}).AsStrSlice()
	if err != nil || len(res) == 0 || res[0] != "resumed" {
		t.Fatalf("claim script (a resume): %v %v", res, err)
	}
}

// pass runs one cleanup pass of b, which must go through.
func pass(t *testing.T, b *Backend) cleanupPass {
	t.Helper()
	res, err := b.cleanup()
	if err != nil {
		t.Fatalf("cleanup pass: %v", err)
	}
	return res
}

// online asserts that u's connection is open and logged in: a list request is answered.
func online(t *testing.T, u *hubtest.Client) {
	t.Helper()
	u.Send(`{"type":"users"}`)
	u.Expect(map[string]any{"type": "users"})
}

// gauge returns the value of the gauge name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestCleanupClosesSessionTakenOverUnseen: alice, on node 0 in a call with bob of node 1, resumed on node 1 with
// her token, but the claim's reply never reached node 1's hub: Redis gives her name to a session node 1 does not
// have, and nobody told node 0 (no Takeover). Node 0's first pass only notes it; its second closes her (4001),
// and bob is told the call ended. Her release leaves the other session's record alone; node 1's pass frees that
// (no session of node 1 has it), and the name is then one session's: a login takes it on node 1, and node 0
// refuses it. Node 0's other users, carol (idle) and dave (resumed there from node 1), are untouched.
func TestCleanupClosesSessionTakenOverUnseen(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	reg := prometheus.NewRegistry()
	cfg0 := testConfig(r.URL(), "s:", "node0")
	cfg0.Cleanup = -1 // the test runs the passes
	n0 := startNode(t, cfg0, hubtest.Config())
	n0.b.Register(reg)
	cfg1 := testConfig(r.URL(), "s:", "node1")
	cfg1.Cleanup = -1
	n1 := startNode(t, cfg1, hubtest.Config())

	alice := hubtest.Connect(t, n0.h)
	aliceToken := alice.Login("alice")
	bob := hubtest.Connect(t, n1.h)
	bob.Login("bob")
	alice.Send(`{"type":"offer","offer":{},"name":"bob"}`)
	alice.Expect(map[string]any{"type": "ringing"})
	bob.Expect(map[string]any{"type": "offer", "name": "alice"})
	bob.Send(`{"type":"answer","answer":{},"name":"alice"}`)
	alice.Expect(map[string]any{"type": "answer", "name": "bob"})
	carol := hubtest.Connect(t, n0.h)
	carol.Login("carol")
	dave := hubtest.Connect(t, n1.h)
	daveToken := dave.Login("dave")
	dave2 := hubtest.Connect(t, n0.h)
	dave2.LoginToken("dave", daveToken)
	if code := dave.Closed(); code != 4000 {
		t.Fatalf("dave's first connection closed with %d", code)
	}
	live := map[string]string{}
	for _, name := range []string{"carol", "dave"} {
		_, live[name] = record(t, rc, "s:", name)
	}

	resumeAs(t, rc, n1.b, "alice", "resumed-on-node1", aliceToken)
	if res := pass(t, n0.b); res.evicted != 0 || res.checked != 3 {
		t.Fatalf("the first pass: %+v; want 3 users checked, none closed", res)
	}
	online(t, alice)
	if res := pass(t, n0.b); res.evicted != 1 || res.checked != 3 {
		t.Fatalf("the second pass: %+v; want 3 users checked, 1 closed", res)
	}
	if code := alice.Closed(); code != 4001 {
		t.Fatalf("alice's connection closed with %d, want 4001", code)
	}
	if n := counter(t, reg, "tandem_cluster_stale_sessions_closed_total"); n != 1 {
		t.Fatalf("tandem_cluster_stale_sessions_closed_total = %v, want 1", n)
	}
	alice.Close() // (the transport reports the closed connection)
	bob.Expect(map[string]any{"type": "leave", "name": "alice", "reason": "disconnected"})
	if node, sid := record(t, rc, "s:", "alice"); node != "node1" || sid != "resumed-on-node1" {
		t.Fatalf("alice's record became node %q, sid %q", node, sid)
	}

	if res := pass(t, n1.b); res.freed != 1 || res.evicted != 0 {
		t.Fatalf("node 1's pass: %+v; want the record of the session it never had freed", res)
	}
	alice2 := hubtest.Connect(t, n1.h)
	alice2.Login("alice")
	thief := hubtest.Connect(t, n0.h)
	thief.Send(`{"type":"login","name":"alice"}`)
	thief.Expect(map[string]any{"type": "login", "success": false, "code": "name_taken"})
	if got := n0.h.Online() + n1.h.Online(); got != 4 { // carol, dave; bob, alice
		t.Fatalf("%d users online on the two nodes, want 4", got)
	}

	for range 2 { // more passes: the live users stay
		if res := pass(t, n0.b); res.evicted != 0 || res.checked != 2 {
			t.Fatalf("a pass over node 0's live users: %+v", res)
		}
	}
	for name, sid := range live {
		if node, got := record(t, rc, "s:", name); node != "node0" || got != sid {
			t.Fatalf("%s's record became node %q, sid %q", name, node, got)
		}
	}
	online(t, carol)
	online(t, dave2)
}

// TestCleanupSparesMissingRecord: alice's record is gone from Redis (what Redis losing its data looks like, and
// the epoch and the registration of the node's users settle that): the passes check her and close nobody.
func TestCleanupSparesMissingRecord(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	reg := prometheus.NewRegistry()
	cfg0 := testConfig(r.URL(), "m:", "node0")
	cfg0.Cleanup = -1
	n0 := startNode(t, cfg0, hubtest.Config())
	n0.b.Register(reg)
	alice := hubtest.Connect(t, n0.h)
	alice.Login("alice")
	if err := rc.Do(context.Background(), rc.B().Del().Key("m:u:alice").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if res := pass(t, n0.b); res.evicted != 0 || res.checked != 1 {
			t.Fatalf("a pass: %+v; want alice checked, not closed", res)
		}
	}
	online(t, alice)
	if n := counter(t, reg, "tandem_cluster_stale_sessions_closed_total"); n != 0 {
		t.Fatalf("tandem_cluster_stale_sessions_closed_total = %v", n)
	}
}

// TestCleanupNeedsTheSameFindingTwice follows the story of a resume whose reply came too late: alice of node 0
// resumes on node 1, the claim runs, node 1 gives up on it and undoes it (the record is gone), and then someone
// else logs in as alice on node 1. A finding in one pass never closes her: not the late resume's (the next pass
// finds another late resume's), nor the second's (the next finds no record), nor the new login's at its first
// pass; the second pass in a row that finds the same closes her, and the name is then held by the new login
// alone.
func TestCleanupNeedsTheSameFindingTwice(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	cfg0 := testConfig(r.URL(), "d:", "node0")
	cfg0.Cleanup = -1
	n0 := startNode(t, cfg0, hubtest.Config())
	cfg1 := testConfig(r.URL(), "d:", "node1")
	cfg1.Cleanup = -1
	n1 := startNode(t, cfg1, hubtest.Config())
	alice := hubtest.Connect(t, n0.h)
	token := alice.Login("alice")

	resumeAs(t, rc, n1.b, "alice", "late-resume", token)
	if res := pass(t, n0.b); res.evicted != 0 || res.checked != 1 {
		t.Fatalf("pass 1 (the late resume's record): %+v", res)
	}
	resumeAs(t, rc, n1.b, "alice", "late-resume-again", token) // the client tried again, as late
	if res := pass(t, n0.b); res.evicted != 0 || res.checked != 1 {
		t.Fatalf("pass 2 (the second late resume's record, once): %+v", res)
	}
	if err := n1.b.Release(context.Background(), "alice", "late-resume-again"); err != nil { // node 1's undo
		t.Fatal(err)
	}
	if res := pass(t, n0.b); res.evicted != 0 || res.checked != 1 {
		t.Fatalf("pass 3 (no record): %+v", res)
	}
	online(t, alice)
	other := hubtest.Connect(t, n1.h)
	other.Login("alice") // the name is free in Redis: the login takes it, while node 0's alice still holds it
	if res := pass(t, n0.b); res.evicted != 0 || res.checked != 1 {
		t.Fatalf("pass 4 (the new login's record, once): %+v", res)
	}
	online(t, alice)
	if res := pass(t, n0.b); res.evicted != 1 {
		t.Fatalf("pass 5 (the new login's record again): %+v", res)
	}
	if code := alice.Closed(); code != 4001 {
		t.Fatalf("alice's connection closed with %d, want 4001", code)
	}
	alice.Close()
	online(t, other)
	thief := hubtest.Connect(t, n0.h)
	thief.Send(`{"type":"login","name":"alice"}`)
	thief.Expect(map[string]any{"type": "login", "success": false, "code": "name_taken"})
	if n0.h.Online() != 0 || n1.h.Online() != 1 {
		t.Fatalf("online: node 0 %d, node 1 %d; want 0 and 1", n0.h.Online(), n1.h.Online())
	}
}

// TestNameConflictOnlineGauge: a login claims a name that Redis no longer has a record of while a session of the
// same node still holds it (Redis lost the record): the old session gives way (4001) and the new one holds the
// name. tandem_users_online must still count the users online: one.
func TestNameConflictOnlineGauge(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	reg := prometheus.NewRegistry()
	hcfg := hubtest.Config()
	hcfg.Metrics = hub.NewMetrics(reg)
	cfg0 := testConfig(r.URL(), "g:", "node0")
	cfg0.Cleanup = -1
	n0 := startNode(t, cfg0, hcfg)
	alice := hubtest.Connect(t, n0.h)
	alice.Login("alice")
	if err := rc.Do(context.Background(), rc.B().Del().Key("g:u:alice").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	alice2 := hubtest.Connect(t, n0.h)
	alice2.Login("alice")
	if code := alice.Closed(); code != 4001 {
		t.Fatalf("the old session closed with %d, want 4001", code)
	}
	alice.Close()
	if got := gauge(t, reg, "tandem_users_online"); got != 1 || n0.h.Online() != 1 {
		t.Fatalf("tandem_users_online = %v, Online() = %d; want 1 and 1", got, n0.h.Online())
	}
}

// TestCleanupChecksEveryChunk: a node with more users than a chunk (names of mixed case, listed in folded order):
// every one is checked in each pass, and only the one whose record another session has, in the third chunk, is
// closed, at the second pass.
func TestCleanupChecksEveryChunk(t *testing.T) {
	r := redistest.Start(t)
	rc := testClient(t, r)
	cfg0 := testConfig(r.URL(), "k:", "node0")
	cfg0.Cleanup = -1
	n0 := startNode(t, cfg0, hubtest.Config())
	cfg1 := testConfig(r.URL(), "k:", "node1")
	cfg1.Cleanup = -1
	n1 := startNode(t, cfg1, hubtest.Config())
	const users = 2*cleanupChunk + 50
	clients := map[string]*hubtest.Client{}
	var staleToken string
	for i := range users {
		name := fmt.Sprintf("%s%03d", []string{"u", "U"}[i%2], i)
		c := hubtest.Connect(t, n0.h)
		token := c.Login(name)
		clients[name] = c
		if i == users-20 {
			staleToken = token
		}
	}
	stale := fmt.Sprintf("%s%03d", []string{"u", "U"}[(users-20)%2], users-20)
	resumeAs(t, rc, n1.b, stale, "late-resume", staleToken)
	for i, want := range []int{0, 1} {
		if res := pass(t, n0.b); res.checked != users || res.evicted != want {
			t.Fatalf("pass %d: %+v; want %d checked, %d closed", i+1, res, users, want)
		}
	}
	if code := clients[stale].Closed(); code != 4001 {
		t.Fatalf("%s closed with %d", stale, code)
	}
	clients[stale].Close()
	if res := pass(t, n0.b); res.checked != users-1 || res.evicted != 0 {
		t.Fatalf("pass 3: %+v", res)
	}
	for _, name := range []string{"u000", "U001", "u128", "U129", "u256", fmt.Sprintf("U%03d", users-1)} {
		online(t, clients[name])
	}
}

// BenchmarkCleanupPassHub measures one cleanup pass of a node whose hub has 20,000 users logged in, on a real
// redis-server: both parts, with the hub's answers (Orphans, Holders) and its lock. It reports the longest
// the hub's lock was held for one chunk of the check (Holders), in microseconds.
func BenchmarkCleanupPassHub(b *testing.B) {
	r := redistest.Start(b)
	cfg := testConfig(r.URL(), "bh:", "node0")
	cfg.Heartbeat, cfg.Lease, cfg.Cleanup = time.Second, 10*time.Second, -1 // 20,000 logins do not cost it its lease
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	hcfg := hubtest.Config()
	hcfg.Cluster, hcfg.ResumeGrace = n, n.cfg.ResumeGrace
	h := hub.New(hcfg)
	if err := h.Start(); err != nil {
		b.Fatal(err)
	}
	defer h.Shutdown()
	for deadline := time.Now().Add(10 * time.Second); h.Ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the node is not ready after 10 s")
		}
	}
	const users = 20000
	t := &testing.T{} // hubtest's clients want a *testing.T; a failed login is caught by the count below
	const wave = 500  // logins under way at once: all 20,000 at once would run past the claims' deadline
	for i := 0; i < users; i += wave {
		for j := i; j < i+wave; j++ {
			hubtest.Connect(t, h).S.OnText([]byte(fmt.Sprintf(`{"type":"login","name":"user%05d"}`, j)))
		}
		for deadline := time.Now().Add(10 * time.Second); h.Online() < i+wave; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%d users logged in, want %d", h.Online(), i+wave)
			}
		}
	}
	var longest time.Duration
	for after := ""; ; {
		start := time.Now()
		recs := h.Holders(after, cleanupChunk)
		longest = max(longest, time.Since(start))
		if len(recs) < cleanupChunk {
			break
		}
		after = recs[len(recs)-1].Name
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := n.cleanup()
		if err != nil || res.freed != 0 || res.scanned != users || res.checked != users || res.evicted != 0 {
			b.Fatalf("%+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(longest.Microseconds()), "max-µs-holders-chunk")
}
