package main

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"tandem/client"
)

// eventLoops: relayEvents is available.
const eventLoops = true

// relayEvents drives the relay's pairs, closed loop, from event loops (one per two of GOMAXPROCS), each waiting with epoll
// on the sockets of its share of the pairs and reading them with the client's TryReadRaw. Per message that is a
// send and a read, with no goroutine parked and woken, and the epoll wait shared by all that are ready. The cycle
// is the goroutine driver's (relay in scenarios.go): each pair has one message in flight, sent when the last one
// arrived.
func (g *generator) relayEvents(pairs []*pair, sched []step, phase *atomic.Int32) {
	n := min(max(1, runtime.GOMAXPROCS(0)/2), len(pairs)) // the other half of the machine is the server's
	// The sockets are also in the runtime's own epoll set (they are net.Conns). A P with nothing to run waits
	// there, and would be woken by every message for nothing: the loops are all the work there is.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	var wg sync.WaitGroup
	for i := range n {
		share := pairs[i*len(pairs)/n : (i+1)*len(pairs)/n]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.relayLoop(share, sched, phase); err != nil {
				g.logf("event loop: %v", err)
			}
		}()
	}
	wg.Wait()
}

// relayLoop runs pairs until the phase is done. A pair whose connection fails stops (measure counts it as
// stalled); the others go on.
func (g *generator) relayLoop(pairs []*pair, sched []step, phase *atomic.Int32) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(ep)
	// Level-triggered: an event says there is something to read, and a read that takes one message of several
	// leaves the socket to be reported again.
	ctl := func(op int, c *client.Client, id int) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var cerr error
		err = rc.Control(func(fd uintptr) {
			cerr = unix.EpollCtl(ep, op, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(id)})
		})
		if err != nil {
			return err
		}
		return cerr
	}
	stop := func(p *pair, id int) {
		p.broken = true
		_ = ctl(unix.EPOLL_CTL_DEL, p.a, id&^1)
		_ = ctl(unix.EPOLL_CTL_DEL, p.b, id|1)
	}
	for i, p := range pairs {
		if err := ctl(unix.EPOLL_CTL_ADD, p.a, 2*i); err != nil {
			return err
		}
		if err := ctl(unix.EPOLL_CTL_ADD, p.b, 2*i+1); err != nil {
			return err
		}
		p.step, p.t0 = 0, time.Now()
		if p.to, err = p.send(sched[0], &g.pl); err != nil {
			stop(p, 2*i)
		}
	}
	events := make([]unix.EpollEvent, 256)
	for phase.Load() != phaseDone {
		n, err := wait(ep, events, 10) // wakes up to see the end of the measurement
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			id := int(ev.Fd)
			p := pairs[id/2]
			c := p.a
			if id%2 == 1 {
				c = p.b
			}
			if !p.broken && p.arrived(c, sched, &g.pl, phase) != nil {
				stop(p, id)
			}
		}
	}
	return nil
}

// arrived reads what has arrived on c, one of p's clients: when it is the message in flight, it is recorded and
// the next step of the cycle is sent. Anything else is skipped (errors counted), as await does.
func (p *pair) arrived(c *client.Client, sched []step, pl *payloads, phase *atomic.Int32) error {
	for {
		frame, ok, err := c.TryReadRaw()
		if err != nil || !ok {
			return err
		}
		switch st := sched[p.step%len(sched)]; {
		case c == p.to && hasType(frame, st.typ):
			p.completed(phase, p.t0)
			p.step++
			p.t0 = time.Now()
			if p.to, err = p.send(sched[p.step%len(sched)], pl); err != nil {
				return err
			}
		case hasType(frame, "error"):
			p.errors++
		}
	}
}

// wait waits up to msec for events with a raw system call, which keeps the loop's P: the runtime then has no idle
// P, so no thread of its own asleep in its epoll set (where the sockets are too), to be woken by every message
// for nothing. The scheduler's preemption signal ends a wait early (EINTR), which lets the runtime's timers run.
func wait(ep int, events []unix.EpollEvent, msec int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(msec), 0, 0)
	switch e {
	case 0:
		return int(n), nil
	case unix.EINTR:
		return 0, nil
	}
	return 0, e
}
