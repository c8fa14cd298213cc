package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"tandem/client"
)

// Phases of a timed scenario: messages completed in the measuring phase are counted.
const (
	phaseWarmup = iota
	phaseMeasure
	phaseDone
)

// pair is two users in a call, driven by one goroutine: with one message in flight there is always exactly one
// connection to read.
type pair struct {
	a, b         *client.Client
	aName, bName string

	lat    latencies
	done   int64     // messages (relay) or setups (setup) completed while measuring
	errors int64     // error messages received
	last   time.Time // when the last one completed

	// The relay's event loop (relay_linux.go) keeps each pair's place in the cycle here.
	step   int            // the step of the cycle in flight
	t0     time.Time      // when it was sent
	to     *client.Client // who receives it
	broken bool           // a connection failed: the pair has stopped
}

// await reads from c until a message of type typ arrives, skipping others (tandem's ringing, the tutorial's
// "Hello world") and counting errors.
func (p *pair) await(c *client.Client, typ string) error {
	for {
		frame, err := c.ReadRaw(context.Background()) // unblocked by closeAll at the end
		if err != nil {
			return err
		}
		if hasType(frame, typ) {
			return nil
		}
		if hasType(frame, "error") {
			p.errors++
		}
	}
}

// completed records a message or setup that started at t0, if it completed while measuring.
func (p *pair) completed(phase *atomic.Int32, t0 time.Time) {
	if phase.Load() != phaseMeasure {
		return
	}
	now := time.Now()
	p.lat = append(p.lat, now.Sub(t0))
	p.done++
	p.last = now
}

// pacer spaces one pair's messages (or setups) so that all pairs together make cfg.rate a second. A pair that
// falls behind (its previous message took longer than its interval) goes on at once, without a catch-up burst.
type pacer struct {
	interval time.Duration // 0: as fast as the server answers
	next     time.Time
}

func (g *generator) pacer(pairs int) *pacer {
	if g.cfg.rate <= 0 {
		return &pacer{}
	}
	interval := time.Duration(float64(pairs) / g.cfg.rate * float64(time.Second))
	// Start at a random point of the first interval, so that the pairs do not send in step.
	return &pacer{interval: interval, next: time.Now().Add(rand.N(interval + 1))}
}

func (p *pacer) wait() {
	if p.interval == 0 {
		return
	}
	if d := time.Until(p.next); d > 0 {
		time.Sleep(d) // a schedule, not an event to wait for
		p.next = p.next.Add(p.interval)
		return
	}
	p.next = time.Now().Add(p.interval)
}

// step is one relayed message of the relay scenario's cycle.
type step struct {
	typ   string
	fromA bool
}

// relaySchedule is one offer/answer exchange with its candidates: an offer from a, the answer from b, then
// candidates, half from each side, alternating. Browsers trickle candidates like this during a call setup, and
// again on every renegotiation.
func relaySchedule(candidates int) []step {
	s := []step{{"offer", true}, {"answer", false}}
	for i := range candidates {
		s = append(s, step{"candidate", i%2 == 0})
	}
	return s
}

// openPairs logs in the users of n/2 pairs.
func (g *generator) openPairs(ctx context.Context, n int) ([]*pair, error) {
	g.logf("logging in %d users", n)
	as, bs := g.names("a", n/2), g.names("b", n/2)
	users, _, err := g.openUsers(ctx, append(as, bs...), g.cfg.concurrency)
	if err != nil {
		return nil, err
	}
	pairs := make([]*pair, n/2)
	for i := range pairs {
		pairs[i] = &pair{a: users[i], b: users[n/2+i], aName: as[i], bName: bs[i]}
	}
	return pairs, nil
}

// send sends step st of the relay cycle and returns the client that receives it.
func (p *pair) send(st step, pl *payloads) (*client.Client, error) {
	from, to, toName := p.a, p.b, p.bName
	if !st.fromA {
		from, to, toName = p.b, p.a, p.aName
	}
	var err error
	switch st.typ {
	case "offer":
		err = from.SendOffer(context.Background(), toName, pl.offer)
	case "answer":
		err = from.SendAnswer(context.Background(), toName, pl.answer)
	default:
		err = from.SendCandidate(context.Background(), toName, pl.candidate)
	}
	return to, err
}

// relay measures the relay scenario. Closed loop on Linux, the pairs are driven by event loops (relay_linux.go),
// which cost the generator less per message than a goroutine per pair: the generator shares the machine with
// the server, and what it spends is not there for the server. Paced, or elsewhere, a goroutine drives each pair.
func (g *generator) relay(ctx context.Context, res *Result) error {
	pairs, err := g.openPairs(ctx, g.cfg.users)
	if err != nil {
		return err
	}
	sched := relaySchedule(g.cfg.candidates)
	drive := eachPair(pairs, func(p *pair, phase *atomic.Int32) error {
		pace := g.pacer(len(pairs))
		for i := 0; phase.Load() != phaseDone; i++ {
			pace.wait()
			st := sched[i%len(sched)]
			t0 := time.Now()
			to, err := p.send(st, &g.pl)
			if err == nil {
				err = p.await(to, st.typ)
			}
			if err != nil {
				return err
			}
			p.completed(phase, t0)
		}
		return nil
	})
	if g.cfg.rate <= 0 && eventLoops {
		drive = func(phase *atomic.Int32) { g.relayEvents(pairs, sched, phase) }
	}
	return g.measure(ctx, res, pairs, drive,
		func(res *Result, n int64, secs float64) { res.Messages, res.MessageRate = n, float64(n)/secs })
}

func (g *generator) setup(ctx context.Context, res *Result) error {
	pairs, err := g.openPairs(ctx, g.cfg.users)
	if err != nil {
		return err
	}
	pl := g.pl
	return g.measure(ctx, res, pairs, eachPair(pairs, func(p *pair, phase *atomic.Int32) error {
		pace := g.pacer(len(pairs))
		for phase.Load() != phaseDone {
			pace.wait()
			t0 := time.Now()
			if err := p.a.SendOffer(context.Background(), p.bName, pl.offer); err != nil {
				return err
			}
			if err := p.await(p.b, "offer"); err != nil {
				return err
			}
			if err := p.b.SendAnswer(context.Background(), p.aName, pl.answer); err != nil {
				return err
			}
			if err := p.await(p.a, "answer"); err != nil {
				return err
			}
			p.completed(phase, t0)
			// Hang up, so that the next offer starts a new call. b reads the leave before the next offer.
			if err := p.a.SendLeave(context.Background(), p.bName, ""); err != nil {
				return err
			}
		}
		return nil
	}), func(res *Result, n int64, secs float64) { res.Setups, res.SetupRate = n, float64(n)/secs })
}

// eachPair returns a driver that runs work in a goroutine for each pair until the connections are closed. The
// error that ends work is that closing, or a failure that stops the pair (measure counts it as stalled).
func eachPair(pairs []*pair, work func(*pair, *atomic.Int32) error) func(*atomic.Int32) {
	return func(phase *atomic.Int32) {
		var wg sync.WaitGroup
		for _, p := range pairs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = work(p, phase)
			}()
		}
		wg.Wait()
	}
}

// measure runs drive, which works the pairs until the phase is done and their connections are closed, through
// a warm-up and a measurement of cfg.duration; then it closes every connection (which ends the reads in
// progress), waits for drive to return and fills in res; record sets the scenario's own count and rate.
func (g *generator) measure(ctx context.Context, res *Result, pairs []*pair, drive func(*atomic.Int32),
	record func(res *Result, n int64, secs float64)) error {
	// Collect the logins' garbage now, so that the generator's own collector seldom runs (and slows the
	// generator down) while it measures: the heap has room for the latencies of a run of a minute or so.
	runtime.GC()
	var phase atomic.Int32
	driven := make(chan struct{})
	go func() {
		defer close(driven)
		drive(&phase)
	}()
	g.logf("warming up for %v", g.cfg.warmup)
	sleepCtx(ctx, g.cfg.warmup)
	meter := startCPU(g.cfg.pids...)
	phase.Store(phaseMeasure)
	g.logf("measuring for %v", g.cfg.duration)
	sleepCtx(ctx, g.cfg.duration)
	var probe Result
	elapsed := meter.stop(&probe, 0)
	phase.Store(phaseDone) // what the workers complete from now on is not counted
	end := meter.start.Add(elapsed)
	g.closeAll()
	<-driven
	if ctx.Err() != nil {
		return ctx.Err()
	}

	var n int64
	var lats []latencies
	for _, p := range pairs {
		n += p.done
		res.Errors += p.errors
		lats = append(lats, p.lat)
		if p.done == 0 || end.Sub(p.last) > time.Second {
			res.Stalled++
		}
	}
	res.Latency = summarize(lats)
	res.Concurrency = 0
	res.Seconds = elapsed.Seconds()
	res.GeneratorCPU, res.ServerCPU, res.ServerWarning = probe.GeneratorCPU, probe.ServerCPU, probe.ServerWarning
	res.Processes = probe.Processes
	if res.ServerCPU > 0 {
		res.PerServerCPUSecond = float64(n) / res.ServerCPU
	}
	record(res, n, res.Seconds)
	return nil
}

func (g *generator) login(ctx context.Context, res *Result) error {
	res.Concurrency = g.cfg.concurrency
	g.logf("logging in %d users, %d at a time", g.cfg.users, g.cfg.concurrency)
	meter := startCPU(g.cfg.pids...)
	users, lats, err := g.openUsers(ctx, g.names("login", g.cfg.users), g.cfg.concurrency)
	if err != nil {
		return err
	}
	n := int64(len(users))
	elapsed := meter.stop(res, n)
	res.Logins, res.LoginRate = n, float64(n)/elapsed.Seconds()
	res.Latency = summarize(lats)
	return nil
}

func (g *generator) idle(ctx context.Context, res *Result) error {
	if len(g.cfg.pids) == 0 {
		return fmt.Errorf("the idle scenario measures the server's memory: give its process id with -pid")
	}
	res.Concurrency = g.cfg.concurrency
	before, err := procsMemory(g.cfg.pids)
	if err != nil {
		return err
	}
	g.logf("logging in %d idle users", g.cfg.users)
	meter := startCPU(g.cfg.pids...)
	users, err := g.openIdle(ctx, "idle", g.cfg.users, g.cfg.concurrency)
	if err != nil {
		return err
	}
	g.logf("%d users logged in; waiting %v before reading the server's memory", len(users), g.cfg.settle)
	sleepCtx(ctx, g.cfg.settle)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	after, err := procsMemory(g.cfg.pids)
	if err != nil {
		return err
	}
	if len(g.cfg.pids) > 1 {
		for i, pid := range g.cfg.pids {
			res.Processes = append(res.Processes, ProcessFigures{PID: pid, MemoryBefore: &before[i], MemoryAfter: &after[i]})
		}
	}
	meter.stop(res, int64(len(users)))
	res.PerServerCPUSecond = 0
	res.Connections = len(users)
	b, a := sumMemory(before), sumMemory(after)
	res.MemoryBefore, res.MemoryAfter = &b, &a
	res.RSSPerConn = float64(a.VmRSS-b.VmRSS) / float64(len(users))
	if a.PSS > 0 {
		res.PSSPerConn = float64(a.PSS-b.PSS) / float64(len(users))
	}
	return nil
}

// procsMemory reads the memory use of each of pids.
func procsMemory(pids []int) ([]memory, error) {
	out := make([]memory, len(pids))
	for i, pid := range pids {
		m, err := procMemory(pid)
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// sumMemory adds up the memory of several processes.
func sumMemory(ms []memory) memory {
	var s memory
	for _, m := range ms {
		s.VmRSS += m.VmRSS
		s.RSS += m.RSS
		s.PSS += m.PSS
		s.PrivateDirty += m.PrivateDirty
		s.Anonymous += m.Anonymous
	}
	return s
}

// sleepCtx waits d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
