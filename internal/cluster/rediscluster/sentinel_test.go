package rediscluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
	"tandem/internal/redistest"
)

// redisProcess is a redis-server (or sentinel) of a test on a loopback TCP port: Sentinel names servers by
// address and port, so these cannot use redistest's Unix sockets.
type redisProcess struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func loopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRedisProcess runs redis-server with args on a free loopback port (the port and bind are added), stops it
// (by its process id) when the test ends, and waits until it answers PING.
func startRedisProcess(t *testing.T, bin string, args ...string) *redisProcess {
	t.Helper()
	port := loopbackPort(t)
	args = append(args, "--port", fmt.Sprint(port), "--bind", "127.0.0.1")
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &redisProcess{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s %v exited: %s", bin, args, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %v does not listen: %s", bin, args, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// do runs one command on a Redis or Sentinel at addr and returns the reply as strings.
func do(t *testing.T, addr string, args ...string) ([]string, error) {
	t.Helper()
	return doAuth(t, addr, "", args...)
}

// doAuth is do with a password.
func doAuth(t *testing.T, addr, password string, args ...string) ([]string, error) {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true,
		DisableCache: true, DisableRetry: true, Password: password})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := c.Do(ctx, c.B().Arbitrary(args...).Build())
	if err := res.Error(); err != nil {
		return nil, err
	}
	if vals, err := res.AsStrSlice(); err == nil {
		return vals, nil
	}
	if n, err := res.AsInt64(); err == nil {
		return []string{fmt.Sprint(n)}, nil
	}
	s, err := res.ToString()
	return []string{s}, err
}

const sentinelPassword = "s3ntinel"

// TestSentinelFailover: nodes given a Sentinel (-redis with master_set, the sentinel's own password) keep
// working across a failover. A real master, replica and sentinel run on loopback ports; two nodes have a call;
// Sentinel promotes the replica while the old master still runs. Then logins work again at once; what the old
// master took in the moment before the nodes followed (a login) is not lost, because the nodes see that Redis
// is another server and register their users again; every name is held on the new master, the list is whole,
// and calls across the nodes, new and old, go on.
func TestSentinelFailover(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(redistest.RequireEnv) == "1" {
			t.Fatalf("redis-server is not on PATH and %s=1: install it (apt-get install redis-server)", redistest.RequireEnv)
		}
		t.Skipf("redis-server is not on PATH: install it (apt-get install redis-server) to run the cluster tests (%s=1 makes this a failure)", redistest.RequireEnv)
	}
	dir := t.TempDir()
	common := []string{"--save", "", "--appendonly", "no", "--dir", dir, "--maxmemory-policy", "noeviction"}
	master := startRedisProcess(t, bin, common...)
	host, port, _ := strings.Cut(master.addr, ":")
	replica := startRedisProcess(t, bin, append(common, "--replicaof", host, port)...)
	conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites its file: one of the test's
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor tandem %s %s 1\n"+
		"sentinel down-after-milliseconds tandem 1000\nsentinel failover-timeout tandem 5000\nrequirepass %s\n",
		host, port, sentinelPassword)), 0o600); err != nil {
		t.Fatal(err)
	}
	sentinel := startRedisProcess(t, bin, conf, "--sentinel")

	// The sentinels want a password of their own; the master none (a test's Redis).
	url := "redis://" + sentinel.addr + "/0?master_set=tandem&sentinel_password=" + sentinelPassword
	var hubs []*hub.Hub
	for i := range 2 {
		b, err := New(testConfig(url, "sn:", fmt.Sprint("node", i)))
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
		hubs = append(hubs, h)
	}
	alice, bob := call(t, hubs[0], hubs[1], "alice", "bob")
	// What the nodes wrote is on the master (they reached it through Sentinel).
	if v, err := do(t, master.addr, "EXISTS", "sn:epoch"); err != nil || v[0] != "1" {
		t.Fatalf("the master has no epoch: %v, %v", v, err)
	}

	// The replica has what the nodes wrote (a Sentinel would not promote a replica out of sync for long).
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, _ := do(t, master.addr, "HGET", "sn:u:bob", "node")
		r, _ := do(t, replica.addr, "HGET", "sn:u:bob", "node")
		if len(m) == 1 && len(r) == 1 && m[0] == "node1" && r[0] == m[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica does not follow the master: %v, %v", r, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The failover: Sentinel promotes the replica once it knows it.
	for {
		v, err := doAuth(t, sentinel.addr, sentinelPassword, "SENTINEL", "FAILOVER", "tandem")
		if err == nil && v[0] == "OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SENTINEL FAILOVER: %v, %v", v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		v, err := doAuth(t, sentinel.addr, sentinelPassword, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "tandem")
		if err == nil && len(v) == 2 && v[0]+":"+v[1] == replica.addr {
			if role, err := do(t, replica.addr, "ROLE"); err == nil && role[0] == "master" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica was not promoted: %v, %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()

	// The nodes follow: a new login on each node succeeds, within seconds. (The first may still reach the old
	// master, which loses it when it becomes a replica: the nodes notice the new master at their next heartbeat
	// and register their users again.)
	carol := loginWithin(t, hubs[0], "carol", "", 20*time.Second)
	dave := loginWithin(t, hubs[1], "dave", "", 20*time.Second)
	t.Logf("the nodes took logins again %v after the failover", time.Since(start).Round(time.Millisecond))
	// Every user's record is on the new master, and the old one is its replica.
	deadline = time.Now().Add(10 * time.Second)
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		for {
			v, err := do(t, replica.addr, "HGET", "sn:u:"+name, "node")
			if err == nil && strings.HasPrefix(v[0], "node") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's record is not on the new master: %v, %v", name, v, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	thief := hubtest.Connect(t, hubs[1])
	thief.Send(`{"type":"login","name":"carol"}`)
	thief.Expect(map[string]any{"type": "login", "success": false, "code": "name_taken"})
	// A new call across the nodes, and the old one goes on.
	// (A node that followed the failover later than a lease may have been taken for dead by another for a
	// moment: its users are then not_online until its next heartbeat. Retried, and said.)
	deadline = time.Now().Add(10 * time.Second)
	for {
		carol.Send(`{"type":"offer","offer":{},"name":"dave"}`)
		m := carol.Next()
		if m["type"] == "ringing" {
			break
		}
		t.Logf("carol's call to dave %v after the failover: %v", time.Since(start).Round(time.Millisecond), m)
		if time.Now().After(deadline) {
			t.Fatalf("carol cannot call dave: %v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	dave.Expect(map[string]any{"type": "offer", "name": "carol"})
	alice.Send(`{"type":"candidate","candidate":{"n":1},"name":"bob"}`)
	bob.Expect(map[string]any{"type": "candidate", "name": "alice"})
	bob.Send(`{"type":"candidate","candidate":{"n":2},"name":"alice"}`)
	alice.Expect(map[string]any{"type": "candidate", "name": "bob"})
	q := hubtest.Connect(t, hubs[1])
	q.Send(`{"type":"users"}`)
	if m := q.Next(); m["total"] != 4.0 {
		t.Fatalf("users after the failover: %v", m)
	}
}
