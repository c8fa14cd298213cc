package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"tandem/client"
)

// The presence scenario: many users online, a share of them watching the online list (most its first page, some
// a name prefix, as people searching), while others sign in and out and start and end calls at -rate changes a
// second; a share of the changes (-first-page-changes) are made by a few users whose names come first, so that
// every first-page watcher sees them. It measures what live presence costs: the lists pushed per change (those that show a new page, and
// those that only refresh the online count), the server's CPU per change, and its memory; and how long a change
// takes to reach a watcher that sees it (a probe user signing in and out under a prefix a probe client watches).

const (
	presenceListLimit = 20 // what the web client asks for
	// Of the watchers, this share watches a prefix; the others the first page.
	presencePrefixShare = 1.0 / 6
	presenceProbeEvery  = 500 * time.Millisecond // and up to a second more, at random
	// presenceFirstPage users have names that sort before every other user's: the list's first page.
	presenceFirstPage = 10
)

// PresenceReport is the presence scenario's figures.
type PresenceReport struct {
	Watchers       int     `json:"watchers"`        // users watching a list
	PrefixWatchers int     `json:"prefix_watchers"` // of which, watching a prefix
	Changes        int64   `json:"changes"`         // logins, leaves, call starts and call ends made while measuring
	ChangeRate     float64 `json:"changes_per_second"`
	PagePushes     int64   `json:"page_pushes"`  // pushed lists whose page differed from the watcher's last
	CountPushes    int64   `json:"count_pushes"` // pushed lists that only refreshed the count
	PushesPerChg   float64 `json:"pushes_per_change"`
	CPUPerChangeUS float64 `json:"server_cpu_us_per_change,omitempty"`
	ProbeLatency   Summary `json:"probe_latency"` // a probe user's login to the push reaching its watcher
	Failed         int64   `json:"failed"`        // changes the server refused
}

// presenceUser is one simulated user of the presence scenario.
type presenceUser struct {
	name string
	c    *client.Client
	busy bool
}

func (g *generator) presence(ctx context.Context, res *Result) error {
	n := g.cfg.users
	watchers := int(float64(n) * g.cfg.watchShare)
	prefixWatchers := int(float64(watchers) * presencePrefixShare)
	if n-watchers-presenceFirstPage < 4 {
		return fmt.Errorf("-users %d with -watchers %g leaves too few users to sign in and out: give more users", n, g.cfg.watchShare)
	}
	names := g.names("p", n)
	for i := range presenceFirstPage { // the last users churn: these sort first ("a" before "p")
		names[n-1-i] = g.cfg.prefix + "a" + strconv.Itoa(i)
	}
	rep := &PresenceReport{Watchers: watchers, PrefixWatchers: prefixWatchers}
	res.Presence = rep
	res.Concurrency = g.cfg.concurrency

	var before memory
	if g.cfg.pid > 0 {
		var err error
		if before, err = procMemory(g.cfg.pid); err != nil {
			return err
		}
	}
	g.logf("logging in %d users, %d of them watching the list (%d a prefix)", n, watchers, prefixWatchers)
	users, _, err := g.openUsers(ctx, names, g.cfg.concurrency)
	if err != nil {
		return err
	}
	var measuring atomic.Bool
	var pagePushes, countPushes atomic.Int64
	// The watchers are the first users; the rest churn.
	for i, c := range users[:watchers] {
		query := ""
		if i < prefixWatchers {
			// Two digits after the scenario's prefix: about one user in a hundred matches each.
			query = names[0][:len(names[0])-1] + strconv.Itoa(10+rand.N(90))
		}
		if err := c.WatchUsers(ctx, query, presenceListLimit); err != nil {
			return err
		}
	}
	for i, c := range users {
		g.drain.Add(1)
		go func() {
			defer g.drain.Done()
			if i < watchers {
				readPushes(c, &measuring, &pagePushes, &countPushes)
				return
			}
			drainConn(c)
		}()
	}
	churn := make([]*presenceUser, 0, n-watchers)
	for i := watchers; i < n-presenceFirstPage; i++ {
		churn = append(churn, &presenceUser{name: names[i], c: users[i]})
	}
	var firstPage []*presenceUser
	for i := n - presenceFirstPage; i < n; i++ {
		firstPage = append(firstPage, &presenceUser{name: names[i], c: users[i]})
	}

	// The probe: a watcher of the prefix "<prefix>probe", and a user under it who signs in and out.
	probeWatch, err := g.dial(ctx, g.cfg.prefix+"probewatch")
	if err != nil {
		return err
	}
	probePrefix := g.cfg.prefix + "probe-"
	if err := probeWatch.WatchUsers(ctx, probePrefix, presenceListLimit); err != nil {
		return err
	}
	if _, err := probeWatch.WaitFor(ctx, "users"); err != nil {
		return err
	}
	g.logf("%d users logged in; changing %.0f times a second for %v", n, g.cfg.rate, g.cfg.duration)
	if g.cfg.warmup > 0 {
		sleepCtx(ctx, g.cfg.warmup)
	}

	meter := startCPU(g.cfg.pid)
	measuring.Store(true)
	start := time.Now()
	var probeLat latencies
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		probeLat = g.probePresence(ctx, probeWatch, probePrefix, start.Add(g.cfg.duration))
	}()
	interval := time.Duration(float64(time.Second) / g.cfg.rate)
	next := time.Now()
	var active [][2]*presenceUser
	for time.Since(start) < g.cfg.duration && ctx.Err() == nil {
		if d := time.Until(next); d > 0 {
			time.Sleep(d) // a schedule, not an event to wait for
		}
		next = next.Add(interval)
		pool := churn
		if rand.Float64() < g.cfg.firstPageShare {
			pool = firstPage
		}
		if err := g.presenceChange(ctx, pool, &active); err != nil {
			rep.Failed++
			g.logf("a change failed: %v", err)
		}
		rep.Changes++
	}
	var probe Result
	elapsed := meter.stop(&probe, rep.Changes)
	measuring.Store(false)
	wg.Wait()

	res.Seconds = elapsed.Seconds()
	res.GeneratorCPU, res.ServerCPU, res.ServerWarning = probe.GeneratorCPU, probe.ServerCPU, probe.ServerWarning
	rep.ChangeRate = float64(rep.Changes) / elapsed.Seconds()
	rep.PagePushes, rep.CountPushes = pagePushes.Load(), countPushes.Load()
	if rep.Changes > 0 {
		rep.PushesPerChg = float64(rep.PagePushes+rep.CountPushes) / float64(rep.Changes)
		if res.ServerCPU > 0 {
			rep.CPUPerChangeUS = res.ServerCPU / float64(rep.Changes) * 1e6
			res.PerServerCPUSecond = float64(rep.Changes) / res.ServerCPU
		}
	}
	rep.ProbeLatency = summarize([]latencies{probeLat})
	if g.cfg.pid > 0 {
		after, err := procMemory(g.cfg.pid)
		if err != nil {
			return err
		}
		res.MemoryBefore, res.MemoryAfter = &before, &after
		res.Connections = n
		res.RSSPerConn = float64(after.VmRSS-before.VmRSS) / float64(n)
	}
	return nil
}

// presenceChange makes one change: a churning user signs out or back in, or a call starts or ends.
func (g *generator) presenceChange(ctx context.Context, churn []*presenceUser, active *[][2]*presenceUser) error {
	switch k := rand.N(4); {
	case k < 2: // sign out, or back in
		u := churn[rand.N(len(churn))]
		if u.busy {
			return nil // in a call: another time
		}
		if u.c != nil {
			_ = u.c.CloseNow()
			u.c = nil
			return nil
		}
		c, err := g.dial(ctx, u.name)
		if err != nil {
			return err
		}
		u.c = c
		g.drain.Add(1)
		go func() { defer g.drain.Done(); drainConn(c) }()
		return nil
	case k == 2 && len(*active) > 0, len(*active) >= len(churn)/4: // a call ends
		i := rand.N(len(*active))
		p := (*active)[i]
		(*active)[i] = (*active)[len(*active)-1]
		*active = (*active)[:len(*active)-1]
		p[0].busy, p[1].busy = false, false
		if p[0].c == nil {
			return nil
		}
		return p[0].c.SendLeave(ctx, p[1].name, "hangup")
	default: // a call starts
		a, b := churn[rand.N(len(churn))], churn[rand.N(len(churn))]
		if a == b || a.busy || b.busy || a.c == nil || b.c == nil {
			return nil
		}
		a.busy, b.busy = true, true
		*active = append(*active, [2]*presenceUser{a, b})
		return a.c.SendOffer(ctx, b.name, g.pl.offer)
	}
}

// probePresence signs a probe user in and out under prefix until the deadline, and returns the time from each
// login reply (or sign-out) to the push that shows it reaching watch, which watches prefix.
func (g *generator) probePresence(ctx context.Context, watch *client.Client, prefix string, until time.Time) latencies {
	var lats latencies
	for i := 0; time.Now().Before(until) && ctx.Err() == nil; i++ {
		name := prefix + strconv.Itoa(i)
		u, err := g.dial(ctx, name)
		if err != nil {
			return lats
		}
		t0 := time.Now()
		if !awaitList(ctx, watch, func(m *client.Message) bool { return len(m.Users) == 1 && m.Users[0].Name == name }) {
			return lats
		}
		lats = append(lats, time.Since(t0))
		// Random pauses: a probe in step with the server's rounds would always wait a whole round, or none.
		sleepCtx(ctx, rand.N(time.Second))
		_ = u.CloseNow()
		t0 = time.Now()
		if !awaitList(ctx, watch, func(m *client.Message) bool { return len(m.Users) == 0 }) {
			return lats
		}
		lats = append(lats, time.Since(t0))
		sleepCtx(ctx, presenceProbeEvery+rand.N(time.Second))
	}
	return lats
}

// awaitList reads pushed lists from c until ok holds (false: the connection or ctx ended first).
func awaitList(ctx context.Context, c *client.Client, ok func(*client.Message) bool) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		m, err := c.WaitFor(ctx, "users")
		if err != nil {
			return false
		}
		if ok(m) {
			return true
		}
	}
}

// readPushes reads a watcher's messages until its connection closes, counting the pushed lists received while
// measuring: those whose page (query and users) differs from the last, and those that only change the count.
func readPushes(c *client.Client, measuring *atomic.Bool, pages, counts *atomic.Int64) {
	var last []byte
	for {
		frame, err := c.ReadRaw(context.Background()) // unblocked by closeAll at the end
		if err != nil {
			return
		}
		if !hasType(frame, "users") {
			continue
		}
		page := frame
		if i := bytes.Index(frame, []byte(`],"more":`)); i >= 0 {
			page = frame[:i]
		}
		update := bytes.Contains(frame, []byte(`"update":true`))
		if update && measuring.Load() {
			if bytes.Equal(page, last) {
				counts.Add(1)
			} else {
				pages.Add(1)
			}
		}
		last = append(last[:0], page...)
	}
}

// drainConn reads c until it closes (the server's pings are answered by the client as it reads).
func drainConn(c *client.Client) {
	for {
		if _, err := c.ReadRaw(context.Background()); err != nil {
			return
		}
	}
}

// print writes the presence scenario's figures.
func (p *PresenceReport) print(w io.Writer) {
	fmt.Fprintf(w, "  watchers     %d (%d the first page, %d a name prefix), %d items a page\n",
		p.Watchers, p.Watchers-p.PrefixWatchers, p.PrefixWatchers, presenceListLimit)
	fmt.Fprintf(w, "  changes      %d (%.1f a second: sign-ins, sign-outs, call starts and ends), %d refused\n",
		p.Changes, p.ChangeRate, p.Failed)
	fmt.Fprintf(w, "  pushed       %d new pages, %d count refreshes: %.2f lists per change\n",
		p.PagePushes, p.CountPushes, p.PushesPerChg)
	if p.CPUPerChangeUS > 0 {
		fmt.Fprintf(w, "  server CPU   %.0f µs per change (the change itself and what it pushes)\n", p.CPUPerChangeUS)
	}
	if l := p.ProbeLatency; l.Count > 0 {
		fmt.Fprintf(w, "  to a watcher ms p50 %.0f  p90 %.0f  max %.0f (%d probes: a sign-in or -out to the push showing it)\n",
			l.P50, l.P90, l.Max, l.Count)
	}
}
