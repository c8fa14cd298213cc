package rediscluster

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
	"tandem/internal/redistest"
)

// stallProxy is a TCP proxy on 127.0.0.1 in front of a test's redis-server. On command (stall) it makes the
// connections that have subscribed go silent the way a broken network path or a stuck Redis can: the connection
// stays open and what the node writes still reaches Redis, but nothing Redis sends reaches the node any more.
type stallProxy struct {
	t      *testing.T
	ln     net.Listener
	target string // Redis's Unix socket

	mu     sync.Mutex
	conns  map[*proxied]struct{}
	closed bool
	wg     sync.WaitGroup
}

type proxied struct {
	client, server net.Conn
	subscribed     atomic.Bool // the node sent SUBSCRIBE on it
	stalled        atomic.Bool // Redis's bytes are dropped
}

func startStallProxy(t *testing.T, r *redistest.Server) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{t: t, ln: ln, target: r.Socket(), conns: map[*proxied]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// url is the Redis URL of the proxy.
func (p *stallProxy) url() string { return "redis://" + p.ln.Addr().String() + "/0" }

func (p *stallProxy) accept() {
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
		pc := &proxied{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.up(pc)
		go p.down(pc)
	}
}

// up copies the node's bytes to Redis, noting a SUBSCRIBE.
func (p *stallProxy) up(pc *proxied) {
	defer p.wg.Done()
	defer p.drop(pc)
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.client.Read(buf)
		if n > 0 {
			if bytes.Contains(bytes.ToUpper(buf[:n]), []byte("SUBSCRIBE")) {
				pc.subscribed.Store(true)
			}
			if _, werr := pc.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// down copies Redis's bytes to the node, or drops them once the connection is stalled.
func (p *stallProxy) down(pc *proxied) {
	defer p.wg.Done()
	defer p.drop(pc)
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.server.Read(buf)
		if n > 0 && !pc.stalled.Load() {
			if _, werr := pc.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) drop(pc *proxied) {
	pc.client.Close()
	pc.server.Close()
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// stall silences every open connection that has subscribed, and returns how many it silenced.
func (p *stallProxy) stall() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pc := range p.conns {
		if pc.subscribed.Load() && !pc.stalled.Load() {
			pc.stalled.Store(true)
			n++
		}
	}
	return n
}

// open reports how many connections are open through the proxy, and how many of them are stalled.
func (p *stallProxy) open() (open, stalled int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		open++
		if pc.stalled.Load() {
			stalled++
		}
	}
	return open, stalled
}

func (p *stallProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for pc := range p.conns {
		pc.client.Close()
		pc.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// counter reads a counter of reg by name.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestSubscriptionSilent: a node's subscription stops delivering while its connection stays open (nothing
// closes it, so nothing reports its loss). The node notices within the probe's bound (docs/cluster.md: nothing
// for three probe intervals, checked every interval), subscribes again on a new connection, and messages from
// the other node reach its users again.
func TestSubscriptionSilent(t *testing.T) {
	r := redistest.Start(t)
	proxy := startStallProxy(t, r)
	var (
		hubs []*hub.Hub
		reg  = prometheus.NewRegistry()
		b0   *Backend
	)
	for i, url := range []string{proxy.url(), r.URL()} { // node 0 through the proxy, node 1 directly
		b, err := New(testConfig(url, "s:", fmt.Sprint("node", i)))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			b0 = b
			b.Register(reg)
		}
		c := hubtest.Config()
		c.Cluster, c.ResumeGrace = b, b.cfg.ResumeGrace
		h := hub.New(c)
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Shutdown)
		waitReady(t, h)
		hubs = append(hubs, h)
	}
	alice, bob := call(t, hubs[0], hubs[1], "alice", "bob")
	if got := counter(t, reg, "tandem_cluster_subscriptions_total"); got != 1 {
		t.Fatalf("%v subscriptions before the stall", got)
	}

	if n := proxy.stall(); n != 1 {
		t.Fatalf("stalled %d subscriptions, want node 0's one", n)
	}
	start := time.Now()
	// The node notices, and subscribes again: a new subscription, on a new connection (the silent one is let go).
	// The probe is what notices (three silent intervals, seen at the next check: 4 intervals), before the Redis
	// client's own keepalive would (a ping after a second of quiet, unanswered for Timeout): the probe failure
	// counted says so, whatever the load on the machine does to the times, which are logged.
	// Then the silent connection is let go (the client waits a second for its answer to a last PING) and the
	// new subscription made (up to a Timeout).
	bound := 4*b0.cfg.Probe + time.Second + b0.cfg.Timeout
	deadline := start.Add(bound + 10*time.Second)
	for counter(t, reg, "tandem_cluster_subscriptions_total") < 2 || hubs[0].Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the node has not subscribed again %v after its subscription went silent", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the silent subscription was replaced after %v (the bound is %v)", time.Since(start).Round(time.Millisecond), bound)
	if got := counter(t, reg, "tandem_cluster_probe_failures_total"); got != 1 {
		t.Errorf("probe failures: %v, want 1 (the probe did not notice the silence)", got)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, stalled := proxy.open(); stalled == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the silent connection is still open")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Messages from the other node reach node 0's user again, in order; and the other way.
	for i := range 10 {
		bob.Send(fmt.Sprintf(`{"type":"candidate","candidate":{"n":%d},"name":"alice"}`, i))
	}
	for i := range 10 {
		if m := alice.Next(); m["type"] != "candidate" || m["candidate"].(map[string]any)["n"] != float64(i) {
			t.Fatalf("candidate %d reached alice as %v", i, m)
		}
	}
	alice.Send(`{"type":"candidate","candidate":{"n":99},"name":"bob"}`)
	bob.Expect(map[string]any{"type": "candidate", "name": "alice"})
	bob.Expect()
}
