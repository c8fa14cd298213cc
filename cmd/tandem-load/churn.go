package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tandem/client"
	"tandem/protocol"
)

// The churn scenario is a soak: for -duration it starts short episodes at a steady -rate (logins, renames,
// resumes, calls that are answered, declined, not answered or cut off, user lists, connections that never log in,
// refused messages, abrupt closes and TCP resets in the middle of bursts and of frames), checks every answer of
// the server, and at the end checks that the server is back where it started: its /metrics before the first
// episode and after the last one (and a bounded settle) must show the same descriptors, goroutines, users online
// and connections, and memory within -memory-tolerance. It speaks tandem's protocol (resume tokens, leave
// reasons, user lists, error codes), not only the tutorial's.

const (
	// churnEpisodeTimeout bounds each episode, whatever the server does.
	churnEpisodeTimeout = 15 * time.Second
	// churnFreedWithin is how long a name may stay online after its connection was closed or reset.
	churnFreedWithin = 5 * time.Second
	// churnDefaultRate is -rate for churn when it is not given: episodes a second.
	churnDefaultRate = 20
	// churnMaxSettle keeps the settle time well under tandem's idle timeout (60 s by default), which would hide a
	// connection that is never torn down by dropping it for silence.
	churnMaxSettle = 30 * time.Second
	// churnSampleEvery is how often the server's figures are read during the run.
	churnSampleEvery = 30 * time.Second
	// churnSamples is how many failures of each kind of episode the report quotes.
	churnSamples = 3
)

// ChurnReport is the churn scenario's part of the report.
type ChurnReport struct {
	Rate            float64                  `json:"episodes_per_second"`
	Achieved        float64                  `json:"episodes_per_second_played"` // started over the run's time
	Episodes        int64                    `json:"episodes"`
	Failed          int64                    `json:"episodes_failed"`
	Skipped         int64                    `json:"episodes_skipped"` // not started: -concurrency episodes were running
	Connections     int64                    `json:"connections_opened"`
	ByKind          map[string]*ChurnEpisode `json:"by_kind"`
	Before          serverGauges             `json:"server_before"`
	After           serverGauges             `json:"server_after"`
	SettleSeconds   float64                  `json:"settle_seconds"` // waited after the last connection closed
	MemoryTolerance float64                  `json:"memory_tolerance_bytes"`
	Leaks           []string                 `json:"not_back,omitempty"`
	Timeline        []ChurnSample            `json:"timeline"`              // the server every -churn-sample
	ServerGone      string                   `json:"server_gone,omitempty"` // why the run stopped early
}

// ChurnSample is the server's figures at one moment of the run.
type ChurnSample struct {
	Seconds  float64      `json:"seconds"`
	Episodes int64        `json:"episodes"`
	Failed   int64        `json:"episodes_failed"`
	Server   serverGauges `json:"server"`
}

// ChurnEpisode counts one kind of episode.
type ChurnEpisode struct {
	Runs     int64    `json:"runs"`
	Failed   int64    `json:"failed"`
	Failures []string `json:"failures,omitempty"` // the first few
}

// churnMix is the kinds of episode and their weights: how often each is picked.
var churnMix = []churnKind{
	{"login", 10, (*episode).epLogin},
	{"rename", 5, (*episode).epRename},
	{"resume-open", 6, (*episode).epResumeOpen},
	{"resume-closed", 6, (*episode).epResumeClosed},
	{"call", 10, (*episode).epCall},
	{"decline", 4, (*episode).epDecline},
	{"no-answer", 4, (*episode).epNoAnswer},
	{"cancel", 4, (*episode).epCancel},
	{"busy", 3, (*episode).epBusy},
	{"drop-in-call", 5, (*episode).epDropInCall},
	{"offer-flood", 3, (*episode).epOfferFlood},
	{"stranger-flood", 3, (*episode).epStrangerFlood},
	{"reset-burst-out", 6, (*episode).epResetBurstOut},
	{"reset-burst-in", 6, (*episode).epResetBurstIn},
	{"mid-frame", 6, (*episode).epMidFrame},
	{"no-login", 6, (*episode).epNoLogin},
	{"refused", 6, (*episode).epRefused},
}

// churnKind is a kind of episode: its name in the report, how often it is picked, what it does.
type churnKind struct {
	name   string
	weight int
	run    func(*episode) error
}

// churner is one churn run's shared state.
type churner struct {
	g       *generator
	seq     atomic.Int64
	opened  atomic.Int64
	mu      sync.Mutex
	byKind  map[string]*ChurnEpisode
	failed  int64
	kinds   []int // the indexes in churnMix of the kinds played
	total   int
	weights []int // running sums of their weights
	picked  int   // episodes picked so far, up to len(kinds)
}

// churnKinds lists the kinds of episode.
func churnKinds() []string {
	var names []string
	for _, k := range churnMix {
		names = append(names, k.name)
	}
	return names
}

// churnSelect returns the indexes in churnMix of the comma-separated kinds in list, all of them for "".
func churnSelect(list string) ([]int, error) {
	var kinds []int
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		i := slices.IndexFunc(churnMix, func(k churnKind) bool { return k.name == name })
		if i < 0 {
			return nil, fmt.Errorf("-episodes: no episode %q (there are %s)", name, strings.Join(churnKinds(), ", "))
		}
		if !slices.Contains(kinds, i) {
			kinds = append(kinds, i)
		}
	}
	if kinds == nil {
		for i := range churnMix {
			kinds = append(kinds, i)
		}
	}
	return kinds, nil
}

func (g *generator) churn(ctx context.Context, res *Result) error {
	rate := g.cfg.rate
	if rate == 0 {
		rate = churnDefaultRate
	}
	sc, err := newScraper(g.cfg.url)
	if err != nil {
		return err
	}
	// The first read warms the server's metrics handler up; the second is the baseline.
	if _, err := sc.read(ctx); err != nil {
		return err
	}
	before, err := sc.read(ctx)
	if err != nil {
		return err
	}
	if m := before.missing(); len(m) > 0 {
		return fmt.Errorf("the server's /metrics has no %s: the churn scenario needs a tandem server", strings.Join(m, ", "))
	}
	ch := &churner{g: g, byKind: map[string]*ChurnEpisode{}}
	ch.kinds, _ = churnSelect(g.cfg.episodes) // checked with the flags
	for _, k := range ch.kinds {
		ch.byKind[churnMix[k].name] = &ChurnEpisode{}
		ch.total += churnMix[k].weight
		ch.weights = append(ch.weights, ch.total)
	}
	rep := &ChurnReport{Rate: rate, ByKind: ch.byKind, Before: before, MemoryTolerance: g.cfg.memoryTolerance}
	res.Churn, res.TargetRate, res.Concurrency, res.Users = rep, rate, g.cfg.concurrency, 0

	g.logf("churn at %.0f episodes a second for %v, at most %d at once; server before: %s", rate, g.cfg.duration,
		g.cfg.concurrency, before)
	start := time.Now()
	meter := startCPU(g.cfg.pid)
	// The episodes still running when the time is up are cut off, their connections dropped (their outcome is
	// not counted): waiting for them would give the server up to churnEpisodeTimeout more to clean up after
	// itself, and hide from the final figures what its keepalive would only reap later.
	episodes, cutOff := context.WithCancel(ctx)
	defer cutOff()
	running := make(chan struct{}, g.cfg.concurrency)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	end := time.NewTimer(g.cfg.duration)
	progress := time.NewTicker(churnSampleEvery)
	defer tick.Stop()
	defer end.Stop()
	defer progress.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end.C:
			break loop
		case <-progress.C:
			ch.mu.Lock()
			sample := ChurnSample{Seconds: time.Since(start).Seconds(), Episodes: rep.Episodes, Failed: ch.failed}
			ch.mu.Unlock()
			if sample.Server, err = sc.read(ctx); err != nil {
				// A server that no longer answers has crashed or hung: go on churning would only count that.
				rep.ServerGone = err.Error()
				g.logf("churn: after %.0f s: %v; stopping", sample.Seconds, err)
				break loop
			}
			rep.Timeline = append(rep.Timeline, sample)
			g.logf("churn: after %.0f s: %d episodes, %d failed; server: %s", sample.Seconds, sample.Episodes,
				sample.Failed, sample.Server)
			continue
		case <-tick.C:
		}
		// The episodes due by now: a ticker drops the ticks of a receiver that is late (a busy machine), and
		// the run would quietly play fewer episodes than -rate says; those missed are started now.
		due := int64(time.Since(start).Seconds()*rate) - rep.Episodes - rep.Skipped
		for range due {
			select {
			case running <- struct{}{}:
			default:
				rep.Skipped++
				continue
			}
			kind := ch.pick()
			ch.mu.Lock()
			rep.Episodes++
			ch.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-running }()
				ch.run(episodes, kind)
			}()
		}
	}
	elapsed := time.Since(start)
	cutOff()
	wg.Wait()
	meter.stop(res, 0)
	res.PerServerCPUSecond = 0
	res.Seconds = elapsed.Seconds()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// Every connection of the generator is closed now. Wait for the server to let go of them, at most -settle.
	settled := time.Now()
	deadline := settled.Add(g.cfg.settle)
	var after serverGauges
	for {
		after, err = sc.read(ctx)
		if err != nil || leaks(before, after, g.cfg.memoryTolerance) == nil || !time.Now().Before(deadline) {
			break
		}
		sleepCtx(ctx, 200*time.Millisecond) // polling the server's figures, not waiting for an event of ours
	}
	rep.After, rep.SettleSeconds = after, time.Since(settled).Seconds()
	if err != nil {
		rep.Leaks = []string{"the server does not answer any more (crashed?): " + err.Error()}
	} else {
		rep.Leaks = leaks(before, after, g.cfg.memoryTolerance)
	}
	rep.Achieved = float64(rep.Episodes) / elapsed.Seconds()
	rep.Connections = ch.opened.Load()
	rep.Failed = ch.failed
	res.Errors = ch.failed
	return nil
}

// pick chooses a kind of episode: each kind once at first, so that even a short run plays every one, then by
// weight. It returns its index in churnMix.
func (ch *churner) pick() int {
	if ch.picked < len(ch.kinds) {
		ch.picked++
		return ch.kinds[ch.picked-1]
	}
	n := rand.IntN(ch.total)
	i, _ := slices.BinarySearch(ch.weights, n+1)
	return ch.kinds[i]
}

// run plays one episode and records how it went.
func (ch *churner) run(ctx context.Context, kind int) {
	ctx, cancel := context.WithTimeout(ctx, churnEpisodeTimeout)
	defer cancel()
	e := &episode{ch: ch, ctx: ctx}
	err := churnMix[kind].run(e)
	e.closeAll()
	if err != nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return // the run was stopped: not the server's fault
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	k := ch.byKind[churnMix[kind].name]
	k.Runs++
	if err != nil {
		k.Failed++
		ch.failed++
		if len(k.Failures) < churnSamples {
			k.Failures = append(k.Failures, err.Error())
		}
	}
}

// episode is one short script of the churn scenario, with the connections it opened.
type episode struct {
	ch    *churner
	ctx   context.Context
	conns []*client.Client
	raws  []*rawConn
}

// name returns a new user name, unique in the run.
func (e *episode) name() string {
	return e.ch.g.cfg.prefix + "c" + strconv.FormatInt(e.ch.seq.Add(1), 10)
}

// dial connects without logging in.
func (e *episode) dial() (*client.Client, error) {
	g := e.ch.g
	g.mu.Lock()
	hc := g.clients[g.next%len(g.clients)]
	g.next++
	g.mu.Unlock()
	c, err := client.Dial(e.ctx, g.cfg.url, &client.Options{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	e.ch.opened.Add(1)
	e.conns = append(e.conns, c)
	return c, nil
}

// connect connects and logs in as name, and checks the reply.
func (e *episode) connect(name string) (*client.Client, *client.Message, error) {
	c, err := e.dial()
	if err != nil {
		return nil, nil, err
	}
	r, err := e.loginAs(c, name, "")
	return c, r, err
}

// loginAs logs c in as name (with token, if not empty) and checks that it succeeded under that name.
func (e *episode) loginAs(c *client.Client, name, token string) (*client.Message, error) {
	r, err := c.Login(e.ctx, name, token)
	switch {
	case err != nil:
		return r, fmt.Errorf("login as %s: %w", name, err)
	case r.Name != name || r.Token == "":
		return r, fmt.Errorf("login as %s: the reply has name %q and token %q", name, r.Name, r.Token)
	}
	return r, nil
}

// dialRaw opens a TCP connection without a handshake, closed when the episode ends (or its time is up).
func (e *episode) dialRaw() (*rawConn, error) {
	r, err := e.ch.g.dialRaw(e.ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	e.ch.opened.Add(1)
	if d, ok := e.ctx.Deadline(); ok {
		_ = r.nc.SetDeadline(d)
	}
	e.raws = append(e.raws, r)
	return r, nil
}

// closeAll closes what is still open, at once.
func (e *episode) closeAll() {
	for _, c := range e.conns {
		_ = c.CloseNow()
	}
	for _, r := range e.raws {
		_ = r.nc.Close()
	}
}

// Ways to end a connection.
const (
	closeNormal = iota // a close frame, and the server's answer awaited
	closeAbrupt        // FIN without a close frame
	closeReset         // a TCP reset (SO_LINGER 0)
	closeWays
)

var closeWayNames = [closeWays]string{"closed", "dropped", "reset"}

func closeWith(c *client.Client, way int) {
	switch way {
	case closeNormal:
		_ = c.Close()
	case closeAbrupt:
		_ = c.CloseNow()
	default:
		resetClient(c)
	}
}

// want is a message an episode waits for.
type want struct {
	desc  string
	match func(*client.Message) bool
}

func relayed(typ, from string) want {
	return want{typ + " from " + from, func(m *client.Message) bool { return m.Type == typ && m.Name == from }}
}

func leaveFrom(from, reason string) want {
	return want{"leave from " + from + " (" + reason + ")", func(m *client.Message) bool {
		return m.Type == protocol.TypeLeave && m.Name == from && m.Reason == reason
	}}
}

func errorCode(code string) want {
	return want{"error " + code, func(m *client.Message) bool { return m.Type == protocol.TypeError && m.Code == code }}
}

func loginRefused(code string) want {
	return want{"login refused with " + code, func(m *client.Message) bool {
		return m.Type == protocol.TypeLogin && !m.Success && m.Code == code
	}}
}

// listed wants a users reply in which name appears exactly n times (0 or 1).
func listed(name string, n int) want {
	return want{fmt.Sprintf("users with %s listed %d times", name, n), func(m *client.Message) bool {
		if m.Type != protocol.TypeUsers {
			return false
		}
		found := 0
		for _, u := range m.Users {
			if u.Name == name {
				found++
			}
		}
		return found == n
	}}
}

// describe says what a message is, for an error.
func describe(m *client.Message) string {
	s := m.Type
	for _, f := range []struct{ k, v string }{{"name", m.Name}, {"code", m.Code}, {"reason", m.Reason}, {"message", m.Message}} {
		if f.v != "" {
			s += " " + f.k + "=" + strconv.Quote(f.v)
		}
	}
	if m.Type == protocol.TypeUsers {
		names := make([]string, 0, len(m.Users))
		for _, u := range m.Users {
			names = append(names, u.Name)
		}
		s += fmt.Sprintf(" users=%v total=%d", names, m.Total)
	}
	return s
}

// expect reads c until every one of wants has come, in any order; any other message is unexpected.
func (e *episode) expect(c *client.Client, who string, wants ...want) error {
	return e.expectSkipping(c, who, nil, wants...)
}

// expectSkipping is expect that also lets messages matching skip go by.
func (e *episode) expectSkipping(c *client.Client, who string, skip func(*client.Message) bool, wants ...want) error {
	pending := slices.Clone(wants)
	for len(pending) > 0 {
		m, err := c.Read(e.ctx)
		if err != nil {
			return fmt.Errorf("%s waiting for %s: %w", who, pending[0].desc, err)
		}
		i := slices.IndexFunc(pending, func(w want) bool { return w.match(m) })
		switch {
		case i >= 0:
			pending = slices.Delete(pending, i, i+1)
		case skip != nil && skip(m):
		default:
			return fmt.Errorf("%s got %s while waiting for %s", who, describe(m), pending[0].desc)
		}
	}
	return nil
}

// expectClosed reads c until the server closes it with the close error target.
func (e *episode) expectClosed(c *client.Client, who string, target error) error {
	m, err := c.Read(e.ctx)
	switch {
	case err == nil:
		return fmt.Errorf("%s got %s while waiting to be closed with %v", who, describe(m), target)
	case !errors.Is(err, target):
		return fmt.Errorf("%s waiting to be closed with %v: %w", who, target, err)
	}
	return nil
}

// search asks c for the users named like name and checks it is listed n times.
func (e *episode) search(c *client.Client, who, name string, n int) error {
	if err := c.SendUsers(e.ctx, name, 100); err != nil {
		return fmt.Errorf("%s sending users: %w", who, err)
	}
	return e.expect(c, who, listed(name, n))
}

// freed checks, from c, that name goes offline within churnFreedWithin (its connection was just closed). Messages
// matching skip may come meanwhile.
func (e *episode) freed(c *client.Client, who, name string, skip func(*client.Message) bool) error {
	deadline := time.Now().Add(churnFreedWithin)
	for {
		if err := c.SendUsers(e.ctx, name, 100); err != nil {
			return fmt.Errorf("%s sending users: %w", who, err)
		}
		m, err := c.Read(e.ctx)
		for err == nil && skip != nil && skip(m) {
			m, err = c.Read(e.ctx)
		}
		if err != nil {
			return fmt.Errorf("%s waiting for users: %w", who, err)
		}
		switch {
		case listed(name, 0).match(m):
			return nil
		case !listed(name, 1).match(m):
			return fmt.Errorf("%s got %s while waiting for users", who, describe(m))
		case !time.Now().Before(deadline):
			return fmt.Errorf("%s is still online %v after its connection ended", name, churnFreedWithin)
		}
		sleepCtx(e.ctx, 100*time.Millisecond) // polling the server's list: no event tells a third party
	}
}

// pair logs in two users.
func (e *episode) pair() (a, b *client.Client, an, bn string, err error) {
	an, bn = e.name(), e.name()
	if a, _, err = e.connect(an); err != nil {
		return
	}
	b, _, err = e.connect(bn)
	return
}

// call sets a call up from a (named an) to b (bn): offer, ringing, answer.
func (e *episode) call(a, b *client.Client, an, bn string) error {
	pl := &e.ch.g.pl
	if err := a.SendOffer(e.ctx, bn, pl.offer); err != nil {
		return fmt.Errorf("%s sending offer: %w", an, err)
	}
	if err := e.expect(b, bn, relayed(protocol.TypeOffer, an)); err != nil {
		return err
	}
	if err := b.SendAnswer(e.ctx, an, pl.answer); err != nil {
		return fmt.Errorf("%s sending answer: %w", bn, err)
	}
	return e.expect(a, an, relayed(protocol.TypeRinging, bn), relayed(protocol.TypeAnswer, bn))
}
