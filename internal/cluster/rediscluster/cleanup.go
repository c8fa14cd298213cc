package rediscluster

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

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

// The same pass then checks this node's own users against Redis: a session of this node whose name Redis gives
// to another session. How it comes about: a resume whose claim Redis ran but whose reply came too late. The node
// that resumed never learned it had, so it never told the old session's node (no Takeover); the name is freed
// afterwards (the undo, or this pass on that node), and the old session stays online on its own node, holding
// the name in that node's memory, while a login elsewhere can take it. Nothing else ends this: the record is
// another's, so the orphans' part leaves it alone, and the old session's node is alive, so no sweep comes.
//
// What it does, in the same pass: it reads this node's users a chunk at a time (cluster.Local.Holders, cleanupChunk
// names, a moment of the hub's lock each), and with one read-only script per chunk the node and session id of
// each name's record; a user whose record exists and names another node or another session id is a finding. A
// user with the same finding (same session here, same node and session id in Redis) in two checks in a row is
// evicted (cluster.Local.Evict: closed with 4001, its call ends, its release fenced by its own session id leaves
// the other's record alone).
//
// Why it never closes a user who holds the name:
//   - Redis is the one authority on who holds a name; a session of this node whose record is another's holds it
//     only in this node's memory. The one legitimate way there is a resume elsewhere, which closes the old
//     session with a Takeover envelope moments after its claim (or the old node's own resume, under the hub's
//     lock): both far inside the interval between two checks (30 s). So the same finding twice means the
//     Takeover was lost, or never sent (the reply too late): then the session must go.
//   - A missing record is never a finding: it is what Redis losing its data looks like, and the epoch and the
//     registration of this node's users (rediscluster.go) settle that, evicting whom they must.
//   - No check runs while the node cannot vouch for the shared state (no lease, its users being registered
//     again, its connection to Redis lost: the state canClaim refuses logins in), and the findings are dropped
//     when it cannot, and whenever a registration began since they were made (regsGen): a registration may make
//     the record this node's user's again. The state is looked at again right before each eviction.
//   - The findings are kept by name with the session id: a user who left and logged in again, or resumed, is a
//     new session, a new finding.
//
// What it costs: one read-only script per cleanupChunk users of this node, each a HMGET per user (157 round
// trips for 20,000 users), and a moment of the hub's lock per chunk (a walk of 128 entries of its index, at most
// 0.06 to 0.15 ms with 20,000 users: the hub's whole map, Registrations, holds the lock 8 to 33 ms); an eviction
// only when there is one. Measured on the shared 2-core machine (load average 4 to 5): the check adds about 60 ms
// of Redis's time to a pass over 20,000 users (3 µs a user; BenchmarkCleanupPass: 0.12 to 0.13 s of Redis for
// the whole pass against 0.06 to 0.08 s without the check, in the same minutes), and a whole pass with a real hub
// of 20,000 users takes 0.20 to 0.23 s (BenchmarkCleanupPassHub): under half a percent of a Redis core per node
// at the default interval.

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
		res, err := b.cleanup()
		if err != nil {
			b.log.Warn("cluster: the cleanup pass failed (it runs again later)", "err", err)
		}
		took := time.Since(start).Round(time.Millisecond)
		if res.freed > 0 {
			b.log.Warn("cluster: freed names that Redis said sessions of this node held, and none did",
				"freed", res.freed, "scanned", res.scanned, "took", took)
		}
		if res.evicted > 0 {
			b.log.Warn("cluster: closed sessions of this node whose names Redis gives to other sessions",
				"closed", res.evicted, "checked", res.checked, "took", took)
		}
		if res.freed == 0 && res.evicted == 0 {
			b.log.Debug("cluster: cleanup pass", "scanned", res.scanned, "checked", res.checked, "took", took)
		}
	}
}

// cleanupPass is what one pass did.
type cleanupPass struct {
	freed, scanned   int // records freed, and names of this node's set read
	evicted, checked int // sessions of this node closed, and of this node's users checked against Redis
}

// holderFinding is a session of this node whose name's record in Redis is another session's.
type holderFinding struct {
	session        string // this node's session
	node, recorded string // the node and session id of the record
}

// cleanup runs one pass: the names Redis says this node's sessions hold, then this node's users.
func (b *Backend) cleanup() (cleanupPass, error) {
	b.passMu.Lock() // (a test may run a pass while the loop does)
	defer b.passMu.Unlock()
	dc, release := b.client.Dedicate()
	defer release()
	var res cleanupPass
	var err error
	if res.freed, res.scanned, err = b.freeOrphans(dc); err != nil {
		return res, err
	}
	res.evicted, res.checked, err = b.checkHolders(dc)
	return res, err
}

// freeOrphans runs the first part of a pass over this node's names; it returns how many records it freed and how
// many names it read.
func (b *Backend) freeOrphans(dc rueidis.DedicatedClient) (freed, scanned int, err error) {
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

// vouches reports whether this node can vouch for the shared state now (as canClaim), and how many registrations
// of its users had begun by then.
func (b *Backend) vouches() (gen int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok = !b.closing && b.epoch != "" && time.Since(b.beatOK) <= b.cfg.Lease && !b.regsDue && !b.suspect
	return b.regsGen, ok
}

// checkHolders runs the second part of a pass: this node's users against their records (see above). It returns
// how many it evicted and how many it checked. The findings of a check that fails are dropped; the previous
// check's are kept for the next.
func (b *Backend) checkHolders(dc rueidis.DedicatedClient) (evicted, checked int, err error) {
	gen, ok := b.vouches()
	if !ok || gen != b.findingsGen {
		b.findings, b.findingsGen = nil, gen
	}
	if !ok {
		return 0, 0, nil
	}
	var found map[string]holderFinding
	after := ""
	for {
		select {
		case <-b.stop:
			return evicted, checked, nil
		default:
		}
		users := b.local.Holders(after, cleanupChunk)
		if len(users) == 0 {
			break
		}
		after = users[len(users)-1].Name
		args := make([]string, 0, len(users)+1)
		args = append(args, b.cfg.Prefix)
		for _, u := range users {
			args = append(args, u.Name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
		vals, err := dc.Do(ctx, dc.B().Eval().Script(holdersScript).Numkeys(0).Arg(args...).Build()).AsStrSlice()
		cancel()
		if err != nil || len(vals) != 2*len(users) {
			return evicted, checked, fmt.Errorf("reading the records of this node's users: %w", unavailable(err))
		}
		for i, u := range users {
			checked++
			node, sid := vals[2*i], vals[2*i+1]
			if node == "" || node == b.cfg.Node && sid == u.Session {
				continue // missing (see above), or this session's
			}
			f := holderFinding{session: u.Session, node: node, recorded: sid}
			if b.findings[u.Name] != f {
				if found == nil {
					found = map[string]holderFinding{}
				}
				found[u.Name] = f
				continue
			}
			if g, ok := b.vouches(); !ok || g != gen {
				b.findings = nil // a registration began meanwhile: its outcome stands
				return evicted, checked, nil
			}
			b.log.Warn("cluster: Redis gives the name of a session of this node to another session, "+
				"for two cleanup passes in a row (its takeover never reached this node): closing it",
				"name", u.Name, "holder_node", node)
			b.local.Evict(u.Name, u.Session)
			b.m.holdersEvicted.Inc()
			evicted++
		}
		if len(users) < cleanupChunk {
			break
		}
	}
	b.findings = found
	return evicted, checked, nil
}
