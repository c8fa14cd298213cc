package auth

import (
	"net/netip"
	"sync"

	"tandem/internal/ws"
)

// gate is the hub's Conn for one WebSocket connection when logins are checked: it passes Send, Close and
// LoggedIn to the WebSocket, knows the client's address and how the connection got in, and counts the pauses of
// its reading.
//
// While a login's check runs on the pool, the connection's reading is paused (ws.Conn.PauseReading): its later
// messages wait, in order, and the hub must not act on them before it knows who the user is. In a cluster the hub
// also pauses the reading while it waits on the shared state, and it may do so from the check's worker (the login
// it settles goes on to the shared state): so pauses are counted here, the transport is paused by the first
// (which is always made on the connection's reader, inside a Handler method, as the transport wants: while no
// pause is outstanding only the reader runs the session) and resumed by the last.
type gate struct {
	ws *ws.Conn
	ip netip.Addr

	mu     sync.Mutex
	pauses int

	// grant is how the connection got in; touched only by whoever runs the session (the reader, or a worker
	// while the reading is paused).
	grant grant
}

// grant is how a connection got in, for what it may do next without credentials (rename, say).
type grant struct {
	kind  string // kindPassword, kindAccount, kindInvite(:id), kindJWT; "" until it got in
	fixed string // the name it must keep ("" when it may rename)
}

const kindJWT = "j"

func (g *gate) Send(msg []byte) bool          { return g.ws.Send(msg) }
func (g *gate) Close(code int, reason string) { g.ws.Close(code, reason) }
func (g *gate) LoggedIn()                     { g.ws.LoggedIn() }

// PauseReading stops the connection's reading until as many ResumeReading calls have come.
func (g *gate) PauseReading() {
	g.mu.Lock()
	g.pauses++
	first := g.pauses == 1
	g.mu.Unlock()
	if first {
		g.ws.PauseReading()
	}
}

// ResumeReading undoes one PauseReading; the last hands the connection back to its reader. Any goroutine.
func (g *gate) ResumeReading() {
	g.mu.Lock()
	g.pauses--
	last := g.pauses == 0
	g.mu.Unlock()
	if last {
		g.ws.ResumeReading()
	}
}
