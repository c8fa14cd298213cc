package auth

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// throttle limits logins per client address: a token bucket of attempts (every login but a repeat of the same
// name), and a backoff after failed ones, per address and, in the accounts mode, per account name. The backoff
// grows with the failures (1 s, 2 s, 4 s ... up to maxBackoff) only past a few free ones, and failures are
// forgotten one every forgetEvery, so a legitimate user who mistypes is never locked out for long; a device
// credential (which cannot be guessed) is not held to the backoff at all.
type throttle struct {
	rate           float64 // attempts a second per address
	burst          float64
	freeFailures   float64
	maxBackoff     time.Duration
	forgetEvery    time.Duration
	limitLoopback  bool
	maxEntries     int
	now            func() time.Time
	mu             sync.Mutex
	addrs          map[addrKey]*record
	names          map[string]*record
	overflowAddr   record // shared by addresses that come while the table is full
	overflowName   record
	refusedLimit   uint64
	refusedBackoff uint64
}

// addrKey groups client addresses: an IPv4 address, or the /64 an IPv6 address is in (one customer commonly has
// a whole /64), as the transport's per-address caps do.
type addrKey [16]byte

type record struct {
	tokens   float64
	tokensAt time.Time
	failures float64
	failedAt time.Time
}

// Defaults of the throttle.
const (
	DefaultLoginRate    = 2  // attempts a second per address
	DefaultLoginBurst   = 20 // attempts at once
	DefaultMaxBackoff   = 30 * time.Second
	defaultFreeFailures = 5
	defaultForgetEvery  = time.Minute
	defaultMaxEntries   = 100_000
)

func newThrottle(rate float64, burst int, maxBackoff time.Duration, limitLoopback bool) *throttle {
	return &throttle{
		rate: rate, burst: float64(burst), freeFailures: defaultFreeFailures, maxBackoff: maxBackoff,
		forgetEvery: defaultForgetEvery, limitLoopback: limitLoopback, maxEntries: defaultMaxEntries,
		now: time.Now, addrs: make(map[addrKey]*record), names: make(map[string]*record),
	}
}

// key returns ip's key, and false when ip is not throttled (unknown, or loopback unless limitLoopback).
func (t *throttle) key(ip netip.Addr) (addrKey, bool) {
	ip = ip.Unmap()
	if !ip.IsValid() || (ip.IsLoopback() && !t.limitLoopback) {
		return addrKey{}, false
	}
	k := addrKey(ip.As16())
	if ip.Is6() {
		clear(k[8:])
	}
	return k, true
}

func (t *throttle) addrLocked(ip netip.Addr, create bool) *record {
	k, ok := t.key(ip)
	if !ok {
		return nil
	}
	r := t.addrs[k]
	if r == nil && create {
		if len(t.addrs) >= t.maxEntries {
			return &t.overflowAddr
		}
		r = &record{tokens: t.burst, tokensAt: t.now()}
		t.addrs[k] = r
	}
	return r
}

func (t *throttle) nameLocked(name string, create bool) *record {
	if name == "" {
		return nil
	}
	r := t.names[name]
	if r == nil && create {
		if len(t.names) >= t.maxEntries {
			return &t.overflowName
		}
		r = &record{}
		t.names[name] = r
	}
	return r
}

// attempt takes one login attempt from ip's bucket; when it is empty it returns how long until it is not.
func (t *throttle) attempt(ip netip.Addr) time.Duration {
	if t.rate <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.addrLocked(ip, true)
	if r == nil {
		return 0
	}
	now := t.now()
	if !r.tokensAt.IsZero() {
		r.tokens = math.Min(t.burst, r.tokens+now.Sub(r.tokensAt).Seconds()*t.rate)
	}
	r.tokensAt = now
	if r.tokens < 1 {
		t.refusedLimit++
		return time.Duration((1 - r.tokens) / t.rate * float64(time.Second))
	}
	r.tokens--
	return 0
}

// failuresAt returns r's failures as of now, those old enough forgotten.
func (t *throttle) failuresAt(r *record, now time.Time) float64 {
	return math.Max(0, r.failures-now.Sub(r.failedAt).Seconds()/t.forgetEvery.Seconds())
}

// wait returns how long r must wait after its last failure.
func (t *throttle) wait(r *record) time.Duration {
	over := math.Ceil(r.failures) - t.freeFailures
	if over <= 0 {
		return 0
	}
	d := t.maxBackoff
	if over < 30 {
		d = min(time.Second<<int(over-1), t.maxBackoff)
	}
	return d
}

// backoff returns how long logins from ip, or as name, must wait after their failures before one is checked.
func (t *throttle) backoff(ip netip.Addr, name string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var left time.Duration
	for _, r := range []*record{t.addrLocked(ip, false), t.nameLocked(name, false)} {
		if r == nil || r.failures == 0 {
			continue
		}
		if until := r.failedAt.Add(t.wait(r)); until.After(now) {
			left = max(left, until.Sub(now))
		}
	}
	if left > 0 {
		t.refusedBackoff++
	}
	return left
}

// failed records a failed login from ip, as name ("" when no account was named).
func (t *throttle) failed(ip netip.Addr, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, r := range []*record{t.addrLocked(ip, true), t.nameLocked(name, true)} {
		if r != nil {
			r.failures = t.failuresAt(r, now) + 1
			r.failedAt = now
		}
	}
}

// succeeded forgets the failures against name: its owner got in.
func (t *throttle) succeeded(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.names, name)
}

// sweep forgets the records that hold nothing any more: a full bucket and no failures left.
func (t *throttle) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for k, r := range t.addrs {
		full := t.rate <= 0 || r.tokens+now.Sub(r.tokensAt).Seconds()*t.rate >= t.burst
		if full && t.failuresAt(r, now) == 0 {
			delete(t.addrs, k)
		}
	}
	for k, r := range t.names {
		if t.failuresAt(r, now) == 0 {
			delete(t.names, k)
		}
	}
}

// entries returns how many addresses and names the throttle remembers.
func (t *throttle) entries() (addrs, names int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.addrs), len(t.names)
}
