package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/cluster/rediscluster"
	"tandem/internal/redistest"
	"tandem/internal/server"
	"tandem/protocol"
)

// startNodes runs two servers, nodes a and b of a cluster on one real redis-server, whose logins cfg checks with
// the login state shared in that Redis.
func startNodes(t *testing.T, rs *redistest.Server, cfgA, cfgB auth.Config) (a, b *env) {
	t.Helper()
	node := func(id string, cfg auth.Config) *env {
		cfg.Redis = auth.RedisConfig{URL: rs.URL()}
		back, err := rediscluster.New(rediscluster.Config{URL: rs.URL(), Node: id, Heartbeat: 200 * time.Millisecond,
			Lease: time.Second, ResumeGrace: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return start(t, cfg, func(c *server.Config) { c.Cluster, c.ResumeGrace = back, 3*time.Second })
	}
	return node("a", cfgA), node("b", cfgB)
}

// failures reads the failures Redis holds for key (rounded up: they are forgotten a little at a time).
func failures(rs *redistest.Server, key string) string {
	return rs.Do("EVAL", "return math.ceil(tonumber(redis.call('HGET',KEYS[1],'f') or '0'))", "1", key)
}

// Failed logins on node a count on node b, per address and per account: an attacker gets no more guesses by
// spreading them over the nodes.
func TestSharedBackoff(t *testing.T) {
	rs := redistest.Start(t)
	users := usersFile(t, "alice", "pw-alice")
	cfg := auth.Config{Mode: auth.Accounts, UsersFile: users, LimitLoopback: true, LoginBurst: 1000}
	a, b := startNodes(t, rs, cfg, cfg)
	var frozen atomic.Int64 // unix nanoseconds
	frozen.Store(time.Now().UnixNano())
	for _, e := range []*env{a, b} {
		auth.SetClock(e.a, func() time.Time { return time.Unix(0, frozen.Load()) })
	}
	addrKey := "tandem:auth:fa:00000000000000000000ffff7f000001" // 127.0.0.1
	for range 5 {                                                // the free failures, all on node a
		a.refused("alice", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	}
	eventually(t, "node a's failures are in Redis", func() bool { return failures(rs, addrKey) == ":5" })
	// Node b has seen none of them, but lets through only one more before the backoff.
	b.refused("alice", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	eventually(t, "node b's failure is in Redis", func() bool {
		return failures(rs, addrKey) == ":6" && failures(rs, "tandem:auth:fn:alice") == ":6"
	})
	for _, e := range []*env{b, a} {
		m := e.refused("alice", client.Credentials{Password: "pw-alice"}, protocol.CodeRateLimited)
		if m.RetryAfter < 1 || !strings.Contains(m.Message, "too many failed logins") {
			t.Errorf("backoff refusal: retryAfter %d, %q", m.RetryAfter, m.Message)
		}
	}
	// The backoff is over a second later, on both nodes; alice's success clears her account's failures.
	frozen.Add(int64(2 * time.Second))
	c, _ := b.in("alice", client.Credentials{Password: "pw-alice"})
	_ = c.Close()
	eventually(t, "alice's failures are forgotten in Redis", func() bool {
		return rs.Do("EXISTS", "tandem:auth:fn:alice") == ":0"
	})
}

// A token with a jti used on node a is refused on node b.
func TestSharedJTI(t *testing.T) {
	rs := redistest.Start(t)
	cfg := auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{Secret: jwtSecret, Audience: testAudience, Issuer: testIssuer}}
	a, b := startNodes(t, rs, cfg, cfg)
	once := sign(t, jwt.SigningMethodHS256, with(claims("carol"), "jti", "token-1"), jwtSecret, "")
	carol, _ := a.in("", client.Credentials{JWT: once})
	_ = carol.Close()
	eventually(t, "carol's name is freed", func() bool { return a.srv.Online() == 0 })
	m := b.refused("", client.Credentials{JWT: once}, protocol.CodeUnauthorized)
	if !strings.Contains(m.Message, "used already") {
		t.Errorf("token replayed on the other node: %q", m.Message)
	}
	if ttl := rs.Do("PTTL", "tandem:auth:jti:token-1"); ttl == ":-1" || ttl == ":-2" {
		t.Errorf("the jti's key has no expiry: %s", ttl)
	}
	// Without Redis, tokens with a jti are refused (fail closed), with a code that says so.
	rs.Stop()
	twice := sign(t, jwt.SigningMethodHS256, with(claims("dave"), "jti", "token-2"), jwtSecret, "")
	b.refused("", client.Credentials{JWT: twice}, protocol.CodeUnavailable)
}

// An invite link for one login used on node a is refused on node b (each node with its own copy of the invites
// file); without Redis, invite links are refused and passwords are still checked.
func TestSharedInvites(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	fileA, fileB := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	_, secret, err := auth.CreateInvite(fileA, auth.InviteOptions{Name: "grandma"})
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := auth.CreateInvite(fileA, auth.InviteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fileA)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fileB, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := auth.Config{Mode: auth.Password, Password: "family password"}
	cfgA, cfgB := cfg, cfg
	cfgA.InvitesFile, cfgB.InvitesFile = fileA, fileB
	a, b := startNodes(t, rs, cfgA, cfgB)

	grandma, _ := a.in("", client.Credentials{Invite: secret})
	_ = grandma.Close()
	eventually(t, "grandma's name is freed", func() bool { return a.srv.Online() == 0 })
	m := b.refused("", client.Credentials{Invite: secret}, protocol.CodeUnauthorized)
	if !strings.Contains(m.Message, "used already") {
		t.Errorf("invite used again on the other node: %q", m.Message)
	}
	a.refused("", client.Credentials{Invite: secret}, protocol.CodeUnauthorized)

	// The throttle fails open: a wrong password is still checked (and refused as wrong), not refused for want of
	// Redis. (A right one would then need Redis for the cluster's names: docs/cluster.md.)
	rs.Stop()
	b.refused("guest", client.Credentials{Invite: other}, protocol.CodeUnavailable)
	b.refused("someone", client.Credentials{Password: "wrong"}, protocol.CodeUnauthorized)
}

// The login attempts of one address are limited on the whole cluster as on one node: attempts spread over two
// nodes draw on one allowance, kept in Redis. Without Redis the node's own allowance still applies (fail open),
// the failure is counted and the login is checked.
func TestSharedLoginRate(t *testing.T) {
	rs := redistest.Start(t)
	// A burst of 3 and no refill while the clocks are frozen: each node alone would let 3 attempts through.
	cfg := auth.Config{Mode: auth.Password, Password: "family password", LimitLoopback: true, LoginBurst: 3, LoginRate: 0.5}
	a, b := startNodes(t, rs, cfg, cfg)
	var frozen atomic.Int64
	frozen.Store(time.Now().UnixNano())
	for _, e := range []*env{a, b} {
		auth.SetClock(e.a, func() time.Time { return time.Unix(0, frozen.Load()) })
	}
	a.refused("m1", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	b.refused("m2", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	a.refused("m3", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	// The fourth attempt, on node b, which has seen one: the cluster's allowance of 3 is used up.
	m := b.refused("m4", client.Credentials{Password: "family password"}, protocol.CodeRateLimited)
	if m.RetryAfter != 2 || !strings.Contains(m.Message, "too many logins from your address") {
		t.Errorf("refusal: retryAfter %d (want 2: one attempt at 0.5 a second), %q", m.RetryAfter, m.Message)
	}
	if ttl := rs.Do("PTTL", "tandem:auth:ra:00000000000000000000ffff7f000001"); ttl == ":-1" || ttl == ":-2" {
		t.Errorf("the address's allowance in Redis has no expiry: %s", ttl)
	}
	// Two seconds later the allowance has one attempt again, on either node.
	frozen.Add(int64(2 * time.Second))
	c, _ := a.in("alice", client.Credentials{Password: "family password"})
	_ = c.Close()

	// Redis gone: the login is checked (node b has attempts of its own left), and the failure counted.
	rs.Stop()
	frozen.Add(int64(10 * time.Second))
	before := auth.RedisErrors(b.a)
	b.refused("m5", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	if after := auth.RedisErrors(b.a); after <= before {
		t.Errorf("Redis errors counted: %d before, %d after", before, after)
	}
}
