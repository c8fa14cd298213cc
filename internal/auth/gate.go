package auth

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"tandem/internal/hub"
	"tandem/internal/ws"
	"tandem/protocol"
)

// gate stands between one WebSocket connection and its hub session when logins are checked. While a login's
// check runs on the pool, the connection's later messages are held back in a small queue (the hub must not act
// on them before it knows who the user is), and handed to the session, in order, once the login is settled.
// Otherwise a message goes straight through, at the cost of one atomic load.
//
// At any moment one goroutine runs the session (hands it events): the connection's reader while nothing is held
// back; from the moment a check is handed to the pool, the pool's worker for that check, which settles the login
// and then drains the queue; and the reader again once the queue is empty. g.checks counts the hand-overs, so a
// worker draining the queue sees when an event it delivered (another login) handed the session to a new check.
//
// gate is also the hub's Conn for the session: it passes Send, Close and LoggedIn to the WebSocket.
type gate struct {
	a  *Auth
	ws *ws.Conn
	s  *hub.Session
	ip netip.Addr

	held atomic.Bool // events go to the queue (a check is running, or the queue is being drained)

	mu       sync.Mutex
	checks   uint64  // hand-overs of the session to a check
	draining bool    // a worker runs the session (settling a login, or draining the queue)
	queue    []event // held back, oldest first
	queued   int     // bytes in queue
	closed   bool    // OnClose came while events were held back: the session's runner closes it

	// grant is how the connection got in; touched only by the session's runner.
	grant grant
}

// event is one connection event held back.
type event struct {
	kind  byte // 't' text, 'b' binary, 'l' too large
	data  []byte
	limit int
}

// grant is how a connection got in, for what it may do next without credentials (rename, say).
type grant struct {
	kind  string // kindPassword, kindAccount, kindInvite, kindJWT; "" until it got in
	fixed string // the name it must keep ("" when it may rename)
}

const kindJWT = "j"

// Hub Conn.

func (g *gate) Send(msg []byte) bool          { return g.ws.Send(msg) }
func (g *gate) Close(code int, reason string) { g.ws.Close(code, reason) }
func (g *gate) LoggedIn()                     { g.ws.LoggedIn() }

// ws Handler.

func (g *gate) OnText(msg []byte) {
	if !g.held.Load() {
		g.s.OnText(msg)
		return
	}
	g.enqueue(event{kind: 't', data: msg})
}

func (g *gate) OnBinary() {
	if !g.held.Load() {
		g.s.OnBinary()
		return
	}
	g.enqueue(event{kind: 'b'})
}

func (g *gate) OnTooLarge(limit int) {
	if !g.held.Load() {
		g.s.OnTooLarge(limit)
		return
	}
	g.enqueue(event{kind: 'l', limit: limit})
}

func (g *gate) OnClose() {
	g.mu.Lock()
	if g.held.Load() {
		g.closed, g.queue, g.queued = true, nil, 0
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	g.s.OnClose()
}

// enqueue holds e back, or refuses it when the queue is full; if the queue was drained meanwhile, e is
// delivered at once.
func (g *gate) enqueue(e event) {
	g.mu.Lock()
	if !g.held.Load() {
		g.mu.Unlock()
		g.deliver(e)
		return
	}
	cfg := &g.a.cfg
	if len(g.queue) >= cfg.HeldMessages || g.queued+len(e.data) > cfg.HeldBytes {
		g.mu.Unlock()
		g.a.heldRefused.Add(1)
		g.ws.Send(protocol.AppendError(nil, protocol.CodeRateLimited,
			"wait for the login reply: this message was not acted on", "", ""))
		return
	}
	e.data = append([]byte(nil), e.data...)
	g.queue = append(g.queue, e)
	g.queued += len(e.data)
	g.mu.Unlock()
}

func (g *gate) deliver(e event) {
	switch e.kind {
	case 't':
		g.s.OnText(e.data)
	case 'b':
		g.s.OnBinary()
	case 'l':
		g.s.OnTooLarge(e.limit)
	}
}

// hold hands the session to a check about to go to the pool: from now on events are held back.
func (g *gate) hold() {
	g.mu.Lock()
	g.checks++
	g.held.Store(true)
	g.mu.Unlock()
}

// unhold takes back a hold whose check could not go to the pool: the caller goes on running the session.
func (g *gate) unhold() {
	g.mu.Lock()
	g.checks--
	if !g.draining {
		g.held.Store(false) // the reader was running the session, so nothing was queued meanwhile
	}
	g.mu.Unlock()
}

// release is called by the worker whose check is done: it settles the login with apply (unless the connection
// closed meanwhile), then hands the session the events held back, until none are left or one of them starts
// another check.
func (g *gate) release(apply func()) {
	g.mu.Lock()
	if g.closed {
		g.closeLocked()
		return
	}
	mine := g.checks
	g.draining = true
	g.mu.Unlock()
	apply()
	for {
		g.mu.Lock()
		switch {
		case g.checks != mine: // an event handed the session to another check, whose worker goes on
			g.mu.Unlock()
			return
		case g.closed:
			g.closeLocked()
			return
		case len(g.queue) == 0:
			g.draining = false
			g.held.Store(false)
			g.mu.Unlock()
			return
		}
		e := g.queue[0]
		g.queue[0] = event{}
		g.queue = g.queue[1:]
		g.queued -= len(e.data)
		g.mu.Unlock()
		g.deliver(e)
	}
}

// closeLocked closes the session for an OnClose that came while events were held back; g.mu is held, and is
// released.
func (g *gate) closeLocked() {
	g.draining = false
	g.queue, g.queued = nil, 0
	g.mu.Unlock()
	g.s.OnClose()
}
