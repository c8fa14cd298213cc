package hub

import (
	"context"
	"time"

	"tandem/protocol"
)

// A drain is how a cluster node stops without ending its users' calls (a rolling restart): each of its users'
// connections is closed with 1012 (service restart), spread over a window so that the other nodes are not hit by
// every reconnect at once, and the session behind it is kept as it was: the name stays this user's, the call
// stays up, nobody is told anything. The client reconnects (through the load balancer, to another node) and
// resumes with its token, which moves the name and the call there (a Takeover tells this node). When the node
// then leaves the cluster, those who have not come back yet wait for the cluster's resume grace, as the users of
// a node that died do.

// drainReason is the close reason of a drained connection.
const drainReason = "service restart: reconnect and resume"

// Drain closes the connections of this node's users with 1012, spread evenly over window (the first at once),
// keeping their names and calls for their resume on another node. It returns when every user's connection has
// been told, or when ctx is done (the rest are then told at once). Users who log in meanwhile are told too; from
// then on a closing connection, whatever the reason, keeps its session. On a single node it does nothing: there
// is nowhere to resume, and Shutdown ends the calls.
func (h *Hub) Drain(ctx context.Context, window time.Duration) {
	if h.cl == nil {
		return
	}
	h.mu.Lock()
	h.cl.draining = true
	users := make([]*Session, 0, len(h.users))
	for _, s := range h.users {
		if s.remote == nil && !h.localOnly(s.name) {
			users = append(users, s)
		}
	}
	h.mu.Unlock()
	h.log.Info("draining: telling users to reconnect to another node", "users", len(users), "window", window)
	start := time.Now()
	for i, s := range users {
		if at := start.Add(window * time.Duration(i) / time.Duration(len(users))); time.Until(at) > 0 && ctx.Err() == nil {
			t := time.NewTimer(time.Until(at))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		h.drainSession(s)
	}
	h.drainRest()
}

// drainRest closes, at once, the connections of the users not yet told (those who logged in during the drain).
func (h *Hub) drainRest() {
	h.mu.Lock()
	var rest []*Session
	for _, s := range h.users {
		if s.remote == nil && !s.drained && !h.localOnly(s.name) {
			rest = append(rest, s)
		}
	}
	h.mu.Unlock()
	for _, s := range rest {
		h.drainSession(s)
	}
}

// drainSession closes s's connection with 1012; its closing keeps its session (OnClose).
func (h *Hub) drainSession(s *Session) {
	h.cl.settle() // the shared state has its call before the client can resume elsewhere
	h.mu.Lock()
	s.drained = true
	c := s.conn
	h.mu.Unlock()
	c.Close(protocol.CloseServiceRestart, drainReason)
}

// drainingLocked reports whether a closing connection keeps its session: this node is draining.
func (h *Hub) drainingLocked() bool { return h.cl != nil && h.cl.draining }

// shutdownDrained ends a drain: the logins' sessions end here (this node's TURN credentials), and the node
// leaves the cluster without freeing its users' names, which wait the resume grace for those who have not
// resumed elsewhere yet. Nobody is told that a call ended.
func (h *Hub) shutdownDrained() {
	var sids []string
	h.mu.Lock()
	for _, s := range h.users {
		s.drained = true
		if s.sid != "" {
			sids = append(sids, s.sid)
		}
	}
	h.mu.Unlock()
	h.endSessions(sids...)
	h.closeCluster(false)
}
