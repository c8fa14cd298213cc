package auth

import "time"

// SetClock replaces a's clock (for expiry and backoff), and its throttle's.
func SetClock(a *Auth, now func() time.Time) {
	a.clock.Store(&now)
	a.throttle.mu.Lock()
	a.throttle.now = now
	a.throttle.mu.Unlock()
}

// Pending returns how many checks are queued or running on a's pool.
func Pending(a *Auth) int64 { return a.pool.busy.Load() }

// Reload makes a look at its files at once, as its watcher does every second.
func Reload(a *Auth) { a.reload() }

// RedisErrors returns how many calls to the cluster's Redis failed.
func RedisErrors(a *Auth) uint64 { return a.shared.errors.Load() }
