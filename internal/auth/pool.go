package auth

import (
	"sync"
	"sync/atomic"
)

// pool runs the expensive checks (password hashes, token signatures, invite files) on a fixed number of worker
// goroutines, never on the epoll loops that read connections. Work waits in a bounded queue; past it, a check
// is refused at once (the login gets server_busy), so that a login storm costs the server a bounded amount of
// CPU and memory (Argon2id takes 19 MiB per hash in progress) and never delays relaying.
type pool struct {
	jobs    chan job
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.RWMutex // held for writing while closing, so that nothing is queued after the queue is drained
	closed  bool
	busy    atomic.Int64 // jobs queued or running
	refused atomic.Uint64
}

// job is one check: run does it on a worker; cancel is called instead when the pool closes before it ran.
type job struct {
	run    func()
	cancel func()
}

func newPool(workers, queue int) *pool {
	p := &pool{jobs: make(chan job, queue), stop: make(chan struct{})}
	p.wg.Add(workers)
	for range workers {
		go p.work()
	}
	return p
}

func (p *pool) work() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case j := <-p.jobs:
			j.run()
			p.busy.Add(-1)
		}
	}
}

// submit queues j without blocking; false when the queue is full or the pool is closed (j is then not run).
func (p *pool) submit(j job) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	p.busy.Add(1)
	select {
	case p.jobs <- j:
		return true
	default:
		p.busy.Add(-1)
		p.refused.Add(1)
		return false
	}
}

// close stops the workers after the jobs they are running, and cancels the jobs still queued.
func (p *pool) close() {
	p.mu.Lock()
	was := p.closed
	p.closed = true
	p.mu.Unlock()
	if was {
		return
	}
	close(p.stop)
	p.wg.Wait()
	for {
		select {
		case j := <-p.jobs:
			j.cancel()
			p.busy.Add(-1)
		default:
			return
		}
	}
}
