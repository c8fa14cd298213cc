package hub

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"tandem/internal/cluster"
	"tandem/protocol"
)

// Live presence: a client that asks for the user list with "watch": true is kept up to date (docs/protocol.md,
// "users"). What it costs, and why it is bounded:
//
//   - A watched list is a query (the query text and the limit). Watchers of the same query share one entry, one
//     computation and one encoded message; a connection watches one query at most (a new users request replaces
//     it, one without watch ends it, and so does closing the connection).
//   - A change (a login, a user leaving, a call starting or ending) only marks dirty the queries whose page it may
//     change: those whose prefix the changed name starts with (a map lookup per prefix of the name, so the cost of
//     a change does not grow with the number of watchers or queries); it sends nothing.
//   - A loop, running only while someone watches, recomputes each dirty query at most once per interval
//     (presenceInterval) and pushes the new page to its watchers only when the page differs from the one they
//     have: one message per watcher per interval at most, and none for a change their page does not show.
//   - The online count rides on those pushes; when it changed and a watcher got no page, the loop sends it the
//     page again with the new count, at most once every presenceCountEvery.
//   - In a cluster, the changes happen on any node: the loop asks the shared state for its change counter once per
//     interval (cluster.PresenceVersioner), and when it moved lists each watched query once: the cost is per node
//     and per interval, not per user.
//
// Ordering: the loop sends its pushes holding sendMu, and so does the reply to a watch request, so a push
// computed before a reply never arrives after it.

const (
	// presenceInterval is the shortest time between two rounds of pushes: what a watcher waits at most for a
	// change to show (plus the time to send it), and the most often it gets a message.
	presenceInterval = time.Second
	// presenceCountEvery is the longest a watcher's online count stays stale when its page does not change.
	presenceCountEvery = 10 * time.Second
	// DefaultWatchQueries is Config.WatchQueries' default.
	DefaultWatchQueries = 1024
)

// presence is the hub's watched lists; its fields are guarded by the hub's mu, except sendMu and kick.
type presence struct {
	sendMu sync.Mutex    // held while pushes or a watch reply are sent (see above)
	kick   chan struct{} // wakes the loop: something changed
	stop   chan struct{} // closed by Shutdown
	once   sync.Once

	queries  map[watchKey]*watchQuery
	byPrefix map[string][]*watchQuery // by folded prefix
	watchers int
	running  bool // the loop runs
	// total is the online count last sent; countStale says it changed since the last count round, at lastCount.
	total      int
	countStale bool
	lastCount  time.Time
	// Cluster: the shared state's change counter at the last round, and whether every query must be listed again
	// whatever it says (a new query, or a reply that may be newer than the round's).
	version    uint64
	haveVer    bool
	relistAll  bool
	maxQueries int
	// manual: no loop is started; the rounds are run by whoever set it (the fuzz target, for repeatable runs).
	manual bool
}

// watchKey identifies a watched query: the query text as sent (trimmed; it is echoed in every push) and the limit.
type watchKey struct {
	query string
	limit int
}

// watchQuery is one watched list and what its watchers were last sent.
type watchQuery struct {
	key      watchKey
	prefix   string // folded
	watchers map[*Session]*watcher
	dirty    bool // a change may have changed its page: compute it again
	pending  bool // its page changed outside a round: some watchers still have the old one
	valid    bool // page holds a computed page
	list     []protocol.User
	more     bool
	seq      uint64 // bumped each time the page changes
	// full and lastKey: the page is full (limit entries) and the folded name of its last entry; a busy change of
	// a user after it cannot change the page.
	full    bool
	lastKey string
}

// watcher is one connection's watch.
type watcher struct {
	q     *watchQuery
	seq   uint64 // the page it has
	total int    // the count it has
}

// presenceLocked notes a change of the user whose folded name is key; busyOnly says only its busy flag changed
// (a call started or ended) and the online count did not.
func (h *Hub) presenceLocked(key string, busyOnly bool) {
	p := h.pr
	if p == nil || p.watchers == 0 {
		return
	}
	if !busyOnly {
		p.countStale = true
	}
	marked := false
	for i := 0; i <= len(key); i++ {
		for _, q := range p.byPrefix[key[:i]] {
			if q.dirty || (busyOnly && q.valid && q.full && key > q.lastKey) {
				continue
			}
			q.dirty, marked = true, true
		}
	}
	if marked || !busyOnly {
		p.wake()
	}
}

func (p *presence) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// watchUsers handles the watch of a users request: it reports whether it answered the request (a watch). A
// request without "watch" leaves the connection's watch alone (a one-off look-up), and one with "watch": false
// ends it; both are then answered as usual.
func (s *Session) watchUsers(m *protocol.Message, query string, limit int) bool {
	h := s.hub
	if !m.Watch {
		if m.HasWatch {
			h.mu.Lock()
			h.unwatchLocked(s)
			h.mu.Unlock()
		}
		return false
	}
	if utf8.RuneCountInString(query) > protocol.MaxNameLength {
		// No name is that long: the list is empty and stays so. Answered once, it holds nothing.
		h.mu.Lock()
		h.unwatchLocked(s)
		h.mu.Unlock()
		return false
	}
	if h.cl != nil {
		s.watchCluster(query, limit)
		return true
	}
	p := h.presence()
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	s.lockHub()
	w := h.watchLocked(s, watchKey{query, limit})
	var l protocol.UsersList
	if w == nil { // too many queries: an ordinary reply
		list, more := h.listLocked(fold(query), limit)
		l = protocol.UsersList{Query: query, Users: list, More: more, Total: len(h.users)}
	} else {
		q := w.q
		if !q.valid || q.dirty {
			h.computeLocked(q)
		}
		w.seq, w.total = q.seq, len(h.users)
		l = protocol.UsersList{Query: query, Users: q.list, More: q.more, Total: w.total, Watching: true}
	}
	s.unlockHub()
	// q.list is replaced, never changed, and only under sendMu, which is held: it can be read unlocked.
	s.reply(func(b []byte) []byte { return protocol.AppendUsersList(b, l) })
	return true
}

// presence returns the hub's presence state, made on first use.
func (h *Hub) presence() *presence {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pr == nil {
		max := h.cfg.WatchQueries
		if max <= 0 {
			max = DefaultWatchQueries
		}
		h.pr = &presence{kick: make(chan struct{}, 1), stop: make(chan struct{}),
			queries: make(map[watchKey]*watchQuery), byPrefix: make(map[string][]*watchQuery), maxQueries: max,
			lastCount: time.Now()}
	}
	return h.pr
}

// watchLocked makes s watch the query k instead of what it watched; nil when k is a new query and the hub already
// has its most (then s watches nothing).
func (h *Hub) watchLocked(s *Session, k watchKey) *watcher {
	p := h.pr
	if s.gone {
		return nil
	}
	if w := s.watch; w != nil && w.q.key == k {
		return w
	}
	h.unwatchLocked(s)
	q := p.queries[k]
	if q == nil {
		if len(p.queries) >= p.maxQueries {
			return nil
		}
		q = &watchQuery{key: k, prefix: fold(k.query), watchers: make(map[*Session]*watcher)}
		p.queries[k] = q
		p.byPrefix[q.prefix] = append(p.byPrefix[q.prefix], q)
		p.relistAll = true
	}
	w := &watcher{q: q}
	q.watchers[s] = w
	s.watch = w
	p.watchers++
	if !p.running && !p.manual {
		p.running = true
		go h.presenceLoop()
	}
	return w
}

// unwatchLocked ends s's watch, if any.
func (h *Hub) unwatchLocked(s *Session) {
	w := s.watch
	if w == nil {
		return
	}
	s.watch = nil
	p, q := h.pr, w.q
	delete(q.watchers, s)
	p.watchers--
	if len(q.watchers) == 0 {
		delete(p.queries, q.key)
		qs := p.byPrefix[q.prefix]
		for i, o := range qs {
			if o == q {
				qs = append(qs[:i], qs[i+1:]...)
				break
			}
		}
		if len(qs) == 0 {
			delete(p.byPrefix, q.prefix)
		} else {
			p.byPrefix[q.prefix] = qs
		}
	}
	if p.watchers == 0 {
		p.wake() // the loop ends
	}
}

// listLocked lists the users whose folded name starts with prefix, at most limit, and says whether there are more.
func (h *Hub) listLocked(prefix string, limit int) ([]protocol.User, bool) {
	list := make([]protocol.User, 0, min(limit, 8))
	more := false
	h.index.AscendGreaterOrEqual(&Session{key: prefix}, func(u *Session) bool {
		if !strings.HasPrefix(u.key, prefix) {
			return false
		}
		if len(list) == limit {
			more = true
			return false
		}
		list = append(list, protocol.User{Name: u.name, Busy: u.peer != nil, Echo: u.name == h.cfg.EchoName})
		return true
	})
	return list, more
}

// computeLocked computes q's page again (single node) and, if it changed, makes it the new page.
func (h *Hub) computeLocked(q *watchQuery) {
	q.dirty = false
	list, more := h.listLocked(q.prefix, q.key.limit)
	h.pr.setPageLocked(q, list, more)
}

// setPageLocked makes list and more q's page, if they differ from it; it reports whether they did.
func (p *presence) setPageLocked(q *watchQuery, list []protocol.User, more bool) bool {
	if q.valid && more == q.more && samePage(list, q.list) {
		return false
	}
	q.list, q.more, q.valid = list, more, true
	q.seq++
	q.pending = true
	q.full = len(list) == q.key.limit
	q.lastKey = ""
	if q.full {
		q.lastKey = fold(list[len(list)-1].Name)
	}
	return true
}

func samePage(a, b []protocol.User) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// presenceLoop pushes the changes of watched lists while anyone watches.
func (h *Hub) presenceLoop() {
	p := h.pr
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	for {
		select {
		case <-p.kick:
		case <-timer.C:
		case <-p.stop:
			h.mu.Lock()
			p.running = false
			h.mu.Unlock()
			return
		}
		if wait := presenceInterval - time.Since(last); wait > 0 && !last.IsZero() {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-p.stop:
				t.Stop()
				h.mu.Lock()
				p.running = false
				h.mu.Unlock()
				return
			}
		}
		last = time.Now()
		var next time.Duration
		var done bool
		if h.cl != nil {
			next, done = h.presenceRoundCluster()
		} else {
			next, done = h.presenceRound()
		}
		if done {
			return
		}
		if next > 0 {
			timer.Reset(next)
		}
	}
}

// push is one message for one watcher.
type push struct {
	to  Conn
	msg []byte
}

// presenceRound is a round on a single node: the dirty queries are computed again and the changed pages pushed.
// It returns when the loop should run again at the latest (0: when kicked), or done when nobody watches any more.
func (h *Hub) presenceRound() (next time.Duration, done bool) {
	p := h.pr
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	h.mu.Lock()
	if p.watchers == 0 {
		p.running = false
		h.mu.Unlock()
		return 0, true
	}
	var dirty []*watchQuery
	for _, q := range p.queries {
		if q.dirty {
			dirty = append(dirty, q)
		}
	}
	h.mu.Unlock()
	// One query at a time, each under the lock on its own: the hub's lock, which every relayed message takes, is
	// never held for more than one list's walk (at most 100 users).
	for _, q := range dirty {
		h.mu.Lock()
		if q.dirty && p.queries[q.key] == q {
			h.computeLocked(q)
		}
		h.mu.Unlock()
	}
	h.mu.Lock()
	pushes, next := p.collectLocked(len(h.users), time.Now())
	h.mu.Unlock()
	p.send(pushes)
	return next, false
}

// collectLocked gathers the round's messages: the changed pages to their watchers, then, when the count is due,
// the count to the watchers that have an old one.
func (p *presence) collectLocked(total int, now time.Time) ([]push, time.Duration) {
	var pushes []push
	for _, q := range p.queries {
		if !q.pending {
			continue
		}
		q.pending = false
		var msg []byte
		for s, w := range q.watchers {
			if w.seq == q.seq {
				continue
			}
			if msg == nil {
				msg = protocol.AppendUsersList(nil, protocol.UsersList{Query: q.key.query, Users: q.list,
					More: q.more, Total: total, Update: true})
			}
			w.seq, w.total = q.seq, total
			pushes = append(pushes, push{s.conn, msg})
		}
	}
	if total != p.total {
		p.total, p.countStale = total, true
	}
	if !p.countStale {
		return pushes, 0
	}
	if wait := presenceCountEvery - now.Sub(p.lastCount); wait > 0 {
		return pushes, wait
	}
	p.countStale, p.lastCount = false, now
	for _, q := range p.queries {
		var msg []byte
		for s, w := range q.watchers {
			if w.total == total || !q.valid {
				continue
			}
			if msg == nil {
				msg = protocol.AppendUsersList(nil, protocol.UsersList{Query: q.key.query, Users: q.list,
					More: q.more, Total: total, Update: true})
			}
			w.seq, w.total = q.seq, total
			pushes = append(pushes, push{s.conn, msg})
		}
	}
	return pushes, 0
}

func (p *presence) send(pushes []push) {
	for _, m := range pushes {
		m.to.Send(m.msg)
	}
}

// presenceRoundCluster is a round on a cluster node: when the shared state changed (or cannot tell), every
// watched query is listed again from it, and the changed pages pushed. It runs every interval while anyone
// watches.
func (h *Hub) presenceRoundCluster() (next time.Duration, done bool) {
	p := h.pr
	h.mu.Lock()
	if p.watchers == 0 {
		p.running = false
		h.mu.Unlock()
		return 0, true
	}
	keys := make([]watchKey, 0, len(p.queries))
	for k := range p.queries {
		keys = append(keys, k)
	}
	relist := p.relistAll || !p.haveVer
	p.relistAll = false
	lastVer := p.version
	echoOnline := h.cfg.EchoName != "" && h.users[h.cfg.EchoName] != nil
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), h.cl.timeout)
	defer cancel()
	ver, verOK := uint64(0), false
	if v, ok := h.cl.b.(cluster.PresenceVersioner); ok {
		if n, err := v.PresenceVersion(ctx); err == nil {
			ver, verOK = n, true
		}
	}
	type page struct {
		k     watchKey
		list  []protocol.User
		more  bool
		total int
	}
	var pages []page
	if relist || !verOK || ver != lastVer {
		for _, k := range keys {
			prefix := fold(k.query)
			entries, more, total, err := h.cl.b.List(ctx, prefix, k.limit)
			if err != nil {
				h.mu.Lock()
				p.relistAll = true // try again next round
				h.mu.Unlock()
				return presenceInterval, false
			}
			list := usersOf(entries)
			if echoOnline {
				total++
				if strings.HasPrefix(fold(h.cfg.EchoName), prefix) {
					list, more = insertEcho(list, h.cfg.EchoName, k.limit, more)
				}
			}
			pages = append(pages, page{k, list, more, total})
		}
	}
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	h.mu.Lock()
	if verOK {
		p.version, p.haveVer = ver, true
	}
	total := p.total
	for _, pg := range pages {
		if q := p.queries[pg.k]; q != nil {
			p.setPageLocked(q, pg.list, pg.more)
		}
		total = pg.total
	}
	pushes, _ := p.collectLocked(total, time.Now())
	h.mu.Unlock()
	p.send(pushes)
	return presenceInterval, false
}

// watchCluster answers a watch request on a cluster node: the page comes from the shared state, as an ordinary
// request's, and the connection watches the query from then on.
func (s *Session) watchCluster(query string, limit int) {
	h := s.hub
	p := h.presence()
	prefix := fold(query)
	s.wait(func(ctx context.Context) {
		defer s.pauser.ResumeReading()
		entries, more, total, err := h.cl.b.List(ctx, prefix, limit)
		if err != nil {
			s.unavailable(protocol.TypeUsers, "")
			return
		}
		list := usersOf(entries)
		p.sendMu.Lock()
		defer p.sendMu.Unlock()
		h.mu.Lock()
		list, more, total = h.withEchoLocked(list, prefix, limit, more, total)
		w := h.watchLocked(s, watchKey{query, limit})
		if w != nil {
			q := w.q
			switch {
			case !q.valid:
				p.setPageLocked(q, list, more)
				q.pending = false
				w.seq = q.seq
			case q.more == more && samePage(q.list, list):
				w.seq = q.seq
			default:
				// This reply and the query's last page differ: one of them is newer. The next round lists the
				// query again and sends this watcher the page if it is not this one.
				w.seq = 0
				q.pending = true
				p.relistAll = true
			}
			w.total = total
		}
		h.mu.Unlock()
		s.reply(func(b []byte) []byte {
			return protocol.AppendUsersList(b, protocol.UsersList{Query: query, Users: list, More: more, Total: total, Watching: w != nil})
		})
	})
}

// stopPresence ends the presence loop (Shutdown).
func (h *Hub) stopPresence() {
	h.mu.Lock()
	p := h.pr
	h.mu.Unlock()
	if p != nil {
		p.once.Do(func() { close(p.stop) })
	}
}
