package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// RedisConfig makes the login state that must be shared between the nodes of a cluster live in the cluster's
// Redis: the allowance of login attempts per client address (for the logins that carry a credential to check),
// the failure backoff per client address and per account, the token ids (jti) seen, and the uses of invite links.
// Each node also keeps its own allowance per address, which holds when Redis cannot be asked.
type RedisConfig struct {
	URL    string // as -redis; "" for a single node (everything in memory)
	Prefix string // of the keys, as -redis-prefix
	// Client, if not nil, is the process's Redis client (the cluster's, rediscluster.NewClient), used instead of
	// one of its own made from URL; its owner closes it, after Auth.Close.
	Client rueidis.Client
	// Timeout bounds each call to Redis; default 2 s.
	Timeout time.Duration
}

// sharedQueue bounds the failures (and successes) waiting to be written to Redis; past it they are dropped (and
// counted), which only makes the shared backoff milder.
const sharedQueue = 1024

// shared is the Redis side of the throttle, the jti set and the invite counts. Every call makes a round trip:
// call it on the pool, never on a connection's reader (failures and successes, which conclude may record on a
// reader, go through a queue written by one goroutine).
type shared struct {
	client  rueidis.Client
	owned   bool // client was made here, and is closed by close
	prefix  string
	timeout time.Duration
	log     *slog.Logger
	t       *throttle // for its backoff rules (free failures, growth, forgetting)

	queue   chan func(context.Context)
	dropped atomic.Uint64
	wg      sync.WaitGroup
	stop    chan struct{}
	logged  atomic.Int64  // unix seconds of the last "Redis unreachable" log line, to keep them rare
	errors  atomic.Uint64 // calls to Redis that failed (tandem_auth_redis_errors_total)
}

func newShared(cfg RedisConfig, t *throttle, log *slog.Logger) (*shared, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "tandem:"
	}
	client, owned := cfg.Client, false
	if client == nil {
		var err error
		if client, err = newClient(cfg, log); err != nil {
			return nil, err
		}
		owned = true
	}
	s := &shared{client: client, owned: owned, prefix: cfg.Prefix + "auth:", timeout: cfg.Timeout, log: log, t: t,
		queue: make(chan func(context.Context), sharedQueue), stop: make(chan struct{})}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// newClient makes a Redis client of the shared state's own, for an Auth not given the process's.
func newClient(cfg RedisConfig, log *slog.Logger) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("auth: -redis: %w", err)
	}
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.Dialer = net.Dialer{Timeout: 2 * time.Second, KeepAlive: time.Second}
	opt.ConnWriteTimeout = cfg.Timeout
	opt.ClientName = "tandem-auth"
	if opt.Sentinel.MasterSet == "" {
		opt.ForceSingleClient = true // a Redis not up yet is no reason not to start
	}
	client, err := rueidis.NewClient(opt)
	if client == nil {
		return nil, fmt.Errorf("auth: -redis: %w", err)
	}
	if err != nil {
		log.Warn("access: Redis is not reachable yet: logins that need it are refused until it is", "err", err)
	}
	return client, nil
}

func (s *shared) close() {
	close(s.stop)
	s.wg.Wait()
	if s.owned {
		s.client.Close()
	}
}

// writer writes the queued failures and successes, one at a time.
func (s *shared) writer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case f := <-s.queue:
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			f(ctx)
			cancel()
		}
	}
}

func (s *shared) enqueue(f func(context.Context)) {
	select {
	case s.queue <- f:
	default:
		s.dropped.Add(1)
	}
}

// unreachable logs, at most once a minute, that Redis could not be asked.
func (s *shared) unreachable(what string, err error) {
	s.errors.Add(1)
	now := time.Now().Unix()
	if last := s.logged.Load(); now-last >= 60 && s.logged.CompareAndSwap(last, now) {
		s.log.Warn("access: Redis unreachable: "+what, "err", err)
	}
}

func (s *shared) keys(ip netip.Addr, name string) []string {
	var keys []string
	if k, ok := s.t.key(ip); ok {
		keys = append(keys, s.prefix+"fa:"+hex.EncodeToString(k[:]))
	}
	if name != "" {
		keys = append(keys, s.prefix+"fn:"+name)
	}
	return keys
}

// failScript adds a failure to a record {f: failures, t: unix ms of the last}, the older ones forgotten one every
// ARGV[2] ms, and keeps it as long as it can matter. ARGV: now ms, forget-every ms, max backoff ms.
var failScript = rueidis.NewLuaScript(`
local now, every, maxb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for _, k in ipairs(KEYS) do
  local r = redis.call('HMGET', k, 'f', 't')
  local f = tonumber(r[1]) or 0
  local t = tonumber(r[2]) or now
  f = math.max(0, f - math.max(0, now - t) / every) + 1
  redis.call('HSET', k, 'f', tostring(f), 't', now)
  redis.call('PEXPIRE', k, math.ceil(f * every + maxb))
end
return 0`)

// failed records a failed login from ip, as name, in Redis (through the queue).
func (s *shared) failed(ip netip.Addr, name string, now time.Time) {
	keys := s.keys(ip, name)
	if len(keys) == 0 {
		return
	}
	args := []string{strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatInt(s.t.forgetEvery.Milliseconds(), 10),
		strconv.FormatInt(s.t.maxBackoff.Milliseconds(), 10)}
	s.enqueue(func(ctx context.Context) {
		if err := failScript.Exec(ctx, s.client, keys, args).Error(); err != nil {
			s.unreachable("a failed login is not counted on the other nodes", err)
		}
	})
}

// succeeded forgets the failures against name in Redis (through the queue).
func (s *shared) succeeded(name string) {
	k := s.prefix + "fn:" + name
	s.enqueue(func(ctx context.Context) {
		if err := s.client.Do(ctx, s.client.B().Del().Key(k).Build()).Error(); err != nil {
			s.unreachable("an account's failures are not forgotten on the other nodes", err)
		}
	})
}

// backoff returns how long logins from ip, or as name, must wait after the failures every node has recorded. A
// Redis that cannot be asked lets the login be checked (the node's own throttle still applies), and is logged.
func (s *shared) backoff(ip netip.Addr, name string, now time.Time) time.Duration {
	keys := s.keys(ip, name)
	if len(keys) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = s.client.B().Hmget().Key(k).Field("f", "t").Build()
	}
	var left time.Duration
	for _, res := range s.client.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err != nil {
			s.unreachable("logins are checked without the failures seen by the other nodes", err)
			return 0
		}
		if len(vals) != 2 {
			continue
		}
		fs, err1 := vals[0].ToString()
		ts, err2 := vals[1].ToString()
		f, err3 := strconv.ParseFloat(fs, 64)
		ms, err4 := strconv.ParseInt(ts, 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			continue // no record
		}
		r := record{failures: f, failedAt: time.UnixMilli(ms)}
		if until := r.failedAt.Add(s.t.wait(&r)); until.After(now) {
			left = max(left, until.Sub(now))
		}
	}
	return left
}

// rateScript takes one login attempt from an address's allowance, a token bucket {k: tokens, t: unix ms} that
// refills at ARGV[2] a second up to ARGV[3], and keeps it only until it is full again. It returns 0, or the ms to
// wait when the bucket is empty. ARGV: now ms, rate, burst.
var rateScript = rueidis.NewLuaScript(`
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'k', 't')
local k = tonumber(r[1]) or burst
local t = tonumber(r[2]) or now
k = math.min(burst, k + math.max(0, now - t) * rate / 1000)
local wait = 0
if k < 1 then
  wait = math.ceil((1 - k) * 1000 / rate)
else
  k = k - 1
end
redis.call('HSET', KEYS[1], 'k', tostring(k), 't', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - k) * 1000 / rate) + 1000)
return wait`)

// attempt takes one login attempt from ip's allowance on the whole cluster; when it is used up it returns how long
// until it is not. A Redis that cannot be asked lets the attempt through (the node's own allowance still
// applies), and is logged and counted.
func (s *shared) attempt(ip netip.Addr, now time.Time) time.Duration {
	k, ok := s.t.key(ip)
	if !ok || s.t.rate <= 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	ms, err := rateScript.Exec(ctx, s.client, []string{s.prefix + "ra:" + hex.EncodeToString(k[:])},
		[]string{strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatFloat(s.t.rate, 'g', -1, 64),
			strconv.FormatFloat(s.t.burst, 'g', -1, 64)}).AsInt64()
	if err != nil {
		s.unreachable("login attempts are limited per node only", err)
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// errShared: Redis could not be asked whether a single-use credential was used already.
var errShared = errors.New("the cluster's shared state cannot be reached")

// useJTI marks a token id as used until exp, on every node; false when it was used already.
func (s *shared) useJTI(jti string, exp, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	ttl := max(exp.Sub(now), time.Second)
	err := s.client.Do(ctx, s.client.B().Set().Key(s.prefix+"jti:"+jti).Value("1").Nx().Px(ttl).Build()).Error()
	switch {
	case rueidis.IsRedisNil(err):
		return false, nil
	case err != nil:
		s.unreachable("tokens with a jti are refused", err)
		return false, fmt.Errorf("%w: %w", errShared, err)
	}
	return true, nil
}

// forgetJTI forgets a token id whose login failed after all.
func (s *shared) forgetJTI(jti string) {
	k := s.prefix + "jti:" + jti
	s.enqueue(func(ctx context.Context) { _ = s.client.Do(ctx, s.client.B().Del().Key(k).Build()).Error() })
}

// useScript counts a use of an invite: the count starts at the invites file's (ARGV[1]), must stay within the
// limit (ARGV[2]) and lives until the invite expires (ARGV[3] ms). -1 when it is used up.
var useScript = rueidis.NewLuaScript(`
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  return -1
end
return n`)

// refundScript gives back a use, never below zero.
var refundScript = rueidis.NewLuaScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0`)

// useInvite counts a use of inv on every node; false when it is used up.
func (s *shared) useInvite(inv Invite, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	ttl := max(inv.Expires.Sub(now), time.Second) + time.Minute
	n, err := useScript.Exec(ctx, s.client, []string{s.prefix + "inv:" + inv.ID},
		[]string{strconv.Itoa(inv.Used), strconv.Itoa(inv.Uses), strconv.FormatInt(ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		s.unreachable("invite links are refused", err)
		return false, fmt.Errorf("%w: %w", errShared, err)
	}
	return n >= 0, nil
}

// refundInvite gives back a use of invite id.
func (s *shared) refundInvite(id string) {
	k := s.prefix + "inv:" + id
	s.enqueue(func(ctx context.Context) { _ = refundScript.Exec(ctx, s.client, []string{k}, nil).Error() })
}
