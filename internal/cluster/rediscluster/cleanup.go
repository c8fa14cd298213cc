package rediscluster

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"tandem/internal/cluster"
)

// The cleanup pass: names Redis says a session of this node holds, that no session of this node holds.
//
// How they come about: a Claim whose reply reached the hub after its deadline (the user was told `unavailable`,
// the hub gave up the session id, but Redis ran the claim); a release that the old master took in the moment of
// a Sentinel failover and never replicated (the new master still has the record); a record of an earlier
// process that had the same node id. Nothing else frees such a name: its node's lease is current, so it is
// no orphan for the sweep, and a claim finds it live and taken. The hub undoes a failed claim at once
// (hub.undoClaim); this pass is the backstop for what that misses.
//
// What it does, every Config.Cleanup (30 s by default), one chunk at a time: it reads up to cleanupChunk
// members of n:<node> with SSCAN, each with the session id its record has (one read-only script, one round
// trip); then asks the hub which of these (name, session id) are orphans (cluster.Local.Orphans: neither a
// session holding the name on this node, nor a claim under way); then frees those with a fenced script, which
// deletes a record only if it is still this node's and still has that session id. A member of the set whose
// record is gone or another node's is dropped from the set (checked again inside the script).
//
// Why it never frees a name someone holds, nor a claim in flight:
//   - A session id is made for one login (a fresh random id) and is never used again. The hub counts it as
//     claiming from before its Claim is sent until the Claim has returned and either made the session hold the
//     name (the two changes under the hub's lock, with no moment in between when it is neither) or been given
//     up. Once a session lets its name go (logout, rename, takeover, eviction), that id is done for good.
//   - The pass reads a record before it asks the hub. A record with session id X exists only after X's Claim
//     ran in Redis, hence after the hub began counting X as claiming. So when the hub is asked, X is claiming
//     (kept), or holds the name (kept), or is done for good: only then is it freed, and nothing can make X hold
//     the name again. A claim that starts after the read is not in the chunk at all.
//   - Between the question and the free, the record may change hands (a resume with the token, a fresh claim
//     after it was freed otherwise): the free script compares node and session id in Redis, atomically, and
//     leaves any other holder's record alone.
//
// What it costs: per pass, one round trip per cleanupChunk names of this node (157 for 20,000 users), each a
// script of that many HMGETs that holds Redis for about half a millisecond (BenchmarkCleanupPass: a pass over
// 20,000 names takes about 0.1 s, 75 ms of it Redis's time, 3.7 µs a name: a quarter of a percent of a Redis
// core per node at the default interval), and one lock of the hub per chunk with a map lookup per name; a free
// only when there is something to free. The chunk is small so that no script holds Redis up for long. The pass runs on a connection of its own (from
// the client's pool), so its replies do not queue in front of the logins' and messages' in the shared pipeline.
// The first pass runs one interval after the start: the names of an earlier process with the same node id wait
// at least that long (longer than the resume grace, with the defaults) for their users to resume elsewhere.

// DefaultCleanup is Config.Cleanup's default.
const DefaultCleanup = 30 * time.Second

// cleanupChunk is how many names one step of the pass reads (SSCAN's COUNT; Redis may return a few more): a
// script over 128 names holds Redis for about half a millisecond.
const cleanupChunk = 128

func (b *Backend) cleanupLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Cleanup)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		freed, scanned, err := b.cleanup()
		if err != nil {
			b.log.Warn("cluster: the cleanup pass failed (it runs again later)", "err", err)
		}
		if freed > 0 {
			b.log.Warn("cluster: freed names that Redis said sessions of this node held, and none did",
				"freed", freed, "scanned", scanned, "took", time.Since(start).Round(time.Millisecond))
		} else {
			b.log.Debug("cluster: cleanup pass", "scanned", scanned, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// cleanup runs one pass over this node's names; it returns how many records it freed and how many names it read.
func (b *Backend) cleanup() (freed, scanned int, err error) {
	dc, release := b.client.Dedicate()
	defer release()
	cursor := "0"
	for {
		select {
		case <-b.stop:
			return freed, scanned, nil
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
		vals, err := dc.Do(ctx, dc.B().Eval().Script(cleanupScanScript).Numkeys(0).Arg(b.cfg.Prefix, b.cfg.Node,
			cursor, strconv.Itoa(cleanupChunk)).Build()).AsStrSlice()
		if err != nil || len(vals)%2 != 1 {
			cancel()
			return freed, scanned, fmt.Errorf("reading this node's names: %w", unavailable(err))
		}
		cursor = vals[0]
		var recs []cluster.Record
		args := []string{b.cfg.Prefix, b.cfg.Node}
		for i := 1; i < len(vals); i += 2 {
			scanned++
			if vals[i+1] == "" {
				args = append(args, vals[i], "") // a stale member of the set
			} else {
				recs = append(recs, cluster.Record{Name: vals[i], Session: vals[i+1]})
			}
		}
		// Only now, after the read, is the hub asked (see above).
		if len(recs) > 0 {
			for _, o := range b.local.Orphans(recs) {
				args = append(args, o.Name, o.Session)
			}
		}
		if len(args) > 2 {
			n, err := dc.Do(ctx, dc.B().Eval().Script(cleanupScript).Numkeys(0).Arg(args...).Build()).AsInt64()
			if err != nil {
				cancel()
				return freed, scanned, fmt.Errorf("freeing names held by no session: %w", unavailable(err))
			}
			freed += int(n)
			b.m.orphansFreed.Add(float64(n))
		}
		cancel()
		if cursor == "0" {
			return freed, scanned, nil
		}
	}
}
