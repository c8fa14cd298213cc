package main

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"

	"tandem/internal/turnserver/turnclient"
)

// The goroutine engine (-engine goroutines): the generator's first data path, kept as it was so that the loop
// engine's figures can be checked against it on the same runs, and as the path on systems other than Linux. A
// goroutine per client reads its socket, one write per packet: it costs more per packet than the servers it
// measures, so at saturation it, not the server, is the limit.

// goroutineEngine drives the clients with a goroutine each.
type goroutineEngine struct {
	eps       []*endpoint
	transport string
	stop      chan struct{}
	senders   sync.WaitGroup
	receivers sync.WaitGroup
}

func startGoroutines(c *config, eps []*endpoint) *goroutineEngine {
	g := &goroutineEngine{eps: eps, transport: c.transport, stop: make(chan struct{})}
	for _, e := range eps {
		e.credit = make(chan struct{}, c.window)
		g.receivers.Go(func() { e.receive(c.transport) })
	}
	if c.rate > 0 {
		shards := runtime.GOMAXPROCS(0)
		for i := range shards {
			var mine []*endpoint
			for j := i; j < len(eps); j += shards {
				mine = append(mine, eps[j])
			}
			g.senders.Go(func() { pace(mine, c.rate, g.stop) })
		}
	} else {
		for _, e := range eps {
			for range c.window {
				e.credit <- struct{}{}
			}
			g.senders.Go(func() { e.saturate(g.stop) })
		}
	}
	return g
}

func (g *goroutineEngine) counts() (sent, delivered uint64) {
	return totals(g.eps), receivedTotal(g.eps)
}

func (g *goroutineEngine) stopSending() {
	close(g.stop)
	g.senders.Wait()
}

func (g *goroutineEngine) close() {
	for _, e := range g.eps {
		_ = e.c.Close()
	}
	g.receivers.Wait()
}

func (g *goroutineEngine) faults() faultCounts { return faultCounts{} }

// receive counts the packets the client receives on its channel until its socket closes, giving the sender on
// the other side a credit back for each.
func (e *endpoint) receive(transport string) {
	if transport == "udp" {
		buf := make([]byte, 2048)
		conn := e.c.Conn()
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if isTimeout(err) {
					continue
				}
				return
			}
			if n >= turnclient.HeaderSize && buf[0]&0xC0 == 0x40 {
				e.gotOne()
			}
		}
	}
	for {
		f, err := e.c.Read()
		if err != nil {
			if isTimeout(err) {
				continue
			}
			return
		}
		if f.Message == nil {
			e.gotOne()
		}
	}
}

func (e *endpoint) gotOne() {
	e.received.Add(1)
	select {
	case e.peer.credit <- struct{}{}:
	default:
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// pace sends from each of eps rate packets a second, spread evenly over time, until stop closes.
func pace(eps []*endpoint, rate int, stop chan struct{}) {
	if len(eps) == 0 {
		return
	}
	interval := time.Second / time.Duration(rate*len(eps))
	start := time.Now()
	var done int64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		due := int64(time.Since(start) / interval)
		for ; done < due; done++ {
			e := eps[done%int64(len(eps))]
			if _, err := e.c.Conn().Write(e.frame); err == nil {
				e.sent.Add(1)
			}
		}
	}
}

// saturate sends whenever it has a credit; a credit not given back within 200 ms is taken as lost.
func (e *endpoint) saturate(stop chan struct{}) {
	lost := time.NewTimer(time.Hour)
	defer lost.Stop()
	for {
		select {
		case <-stop:
			return
		case <-e.credit:
		default:
			lost.Reset(200 * time.Millisecond)
			select {
			case <-stop:
				return
			case <-e.credit:
			case <-lost.C:
			}
		}
		if _, err := e.c.Conn().Write(e.frame); err == nil {
			e.sent.Add(1)
		}
	}
}
