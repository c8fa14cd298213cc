package auth

import (
	"net/netip"
	"testing"
	"time"
)

// The per-account backoff holds whatever the address, the success of the account's owner clears it, and the
// tables forget what no longer matters and stay bounded.
func TestThrottleNamesAndBounds(t *testing.T) {
	th := newThrottle(1, 2, 30*time.Second, false)
	now := time.Unix(1_000_000, 0)
	th.now = func() time.Time { return now }
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }

	for i := range 6 {
		th.failed(ip(i), "alice")
	}
	if d := th.backoff(ip(100), "alice"); d != time.Second {
		t.Errorf("alice from a new address waits %v, want 1s", d)
	}
	if d := th.backoff(ip(100), "bob"); d != 0 {
		t.Errorf("bob waits %v", d)
	}
	th.succeeded("alice")
	if d := th.backoff(ip(100), "alice"); d != 0 {
		t.Errorf("alice waits %v after her success", d)
	}
	// Loopback is exempt unless limited; IPv6 addresses of one /64 share a record.
	if d := th.attempt(netip.MustParseAddr("127.0.0.1")); d != 0 || len(th.addrs) != 6 {
		t.Errorf("loopback throttled: %v, %d records", d, len(th.addrs))
	}
	a, b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	th.attempt(a)
	th.attempt(b)
	if d := th.attempt(a); d == 0 {
		t.Error("a third attempt from one /64 within the burst of 2 was let through")
	}
	// Idle records are swept: a full bucket, failures forgotten (one a minute).
	now = now.Add(time.Hour)
	th.sweep()
	if n, m := th.entries(); n != 0 || m != 0 {
		t.Errorf("after an idle hour: %d addresses, %d names remembered", n, m)
	}
	// Bounded: past maxEntries, new addresses share one record.
	th.maxEntries = 3
	for i := range 10 {
		th.failed(ip(i), "")
	}
	if n, _ := th.entries(); n != 3 {
		t.Errorf("%d addresses remembered, cap 3", n)
	}
}
