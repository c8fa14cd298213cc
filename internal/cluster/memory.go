package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
)

// Memory is a cluster of nodes in one process sharing one store: the Directory in a map and an ordered index,
// the Bus as one inbox goroutine per node. It is what the shared routing tests run several hubs on without Redis;
// it keeps the same rules as the redis package (fenced writes, a resume grace for the users of a node that
// died), so that the two cannot drift apart unnoticed.
type Memory struct {
	grace time.Duration

	mu    sync.Mutex
	users map[string]*memRecord
	index *btree.BTreeG[*memRecord]
	nodes map[string]*MemoryNode
	// version counts the changes a user list can show (PresenceVersioner).
	version uint64
}

var (
	_ Backend           = (*MemoryNode)(nil)
	_ PresenceVersioner = (*MemoryNode)(nil)
)

type memRecord struct {
	name, key     string
	node, session string
	tokenHash     [32]byte
	peer          string
	caller        uint64
	orphanUntil   time.Time // the node died: the name waits for a resume until then; zero while it lives
	orphaned      bool
}

// NewMemory returns an empty in-process cluster whose dead nodes' users may resume within grace (0: the default).
func NewMemory(grace time.Duration) *Memory {
	if grace <= 0 {
		grace = DefaultResumeGrace
	}
	return &Memory{
		grace: grace,
		users: make(map[string]*memRecord),
		index: btree.NewG(16, func(a, b *memRecord) bool {
			if a.key != b.key {
				return a.key < b.key
			}
			return a.name < b.name
		}),
		nodes: make(map[string]*MemoryNode),
	}
}

// Node returns a new node of the cluster, with its id.
func (m *Memory) Node(id string) *MemoryNode {
	return &MemoryNode{m: m, id: id, inbox: make(chan inboxItem, 1<<16), done: make(chan struct{})}
}

// MemoryNode is one node of a Memory cluster.
type MemoryNode struct {
	m     *Memory
	id    string
	inbox chan inboxItem
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	local   Local
	started bool
	dead    bool // killed or closed: its writes are refused
}

type inboxItem struct {
	e    *Envelope
	down string // a node that died
}

func hashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// Node is the node's id.
func (n *MemoryNode) Node() string { return n.id }

func (n *MemoryNode) alive() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dead {
		return fmt.Errorf("node %s is out of the cluster: %w", n.id, ErrUnavailable)
	}
	return nil
}

// sweepLocked forgets the names whose resume grace has passed.
func (m *Memory) sweepLocked(now time.Time) {
	for name, r := range m.users {
		if r.orphaned && now.After(r.orphanUntil) {
			delete(m.users, name)
			m.index.Delete(r)
			m.version++
		}
	}
}

// Claim implements Directory.
func (n *MemoryNode) Claim(ctx context.Context, c Claim) (ClaimResult, error) {
	if err := n.alive(); err != nil {
		return ClaimResult{}, err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(time.Now())
	r := m.users[c.Name]
	if r == nil {
		r = &memRecord{name: c.Name, key: strings.ToLower(c.Name), node: n.id, session: c.Session,
			tokenHash: hashToken(c.NewToken), caller: c.Caller}
		m.users[c.Name] = r
		m.index.ReplaceOrInsert(r)
		m.version++
		return ClaimResult{Outcome: Claimed, Token: c.NewToken}, nil
	}
	h := hashToken(c.Token)
	if c.Token == "" || subtle.ConstantTimeCompare(h[:], r.tokenHash[:]) != 1 {
		return ClaimResult{Outcome: Taken}, nil
	}
	res := ClaimResult{Outcome: Resumed, Token: c.Token, Old: Route{r.node, r.session}, Peer: r.peer, Caller: r.caller}
	if p := m.users[r.peer]; p != nil && r.peer != "" {
		res.PeerRoute = Route{p.node, p.session}
	}
	r.node, r.session, r.orphaned, r.orphanUntil = n.id, c.Session, false, time.Time{}
	return res, nil
}

// Release implements Directory.
func (n *MemoryNode) Release(ctx context.Context, name, session string) error {
	if err := n.alive(); err != nil {
		return err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.users[name]; r != nil && r.session == session && r.node == n.id {
		delete(m.users, name)
		m.index.Delete(r)
		m.version++
	}
	return nil
}

// SetPeer implements Directory.
func (n *MemoryNode) SetPeer(ctx context.Context, name, session, peer string) error {
	if err := n.alive(); err != nil {
		return err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.users[name]; r != nil && r.session == session && r.node == n.id {
		if (r.peer != "") != (peer != "") {
			m.version++
		}
		r.peer = peer
	}
	return nil
}

// Locate implements Directory.
func (n *MemoryNode) Locate(ctx context.Context, name string) (Route, bool, error) {
	if err := n.alive(); err != nil {
		return Route{}, false, err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(time.Now())
	r := m.users[name]
	if r == nil || r.orphaned {
		return Route{}, false, nil
	}
	return Route{r.node, r.session}, true, nil
}

// List implements Directory.
func (n *MemoryNode) List(ctx context.Context, prefix string, limit int) ([]Entry, bool, int, error) {
	if err := n.alive(); err != nil {
		return nil, false, 0, err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(time.Now())
	var list []Entry
	more := false
	m.index.AscendGreaterOrEqual(&memRecord{key: prefix}, func(r *memRecord) bool {
		if !strings.HasPrefix(r.key, prefix) {
			return false
		}
		if len(list) == limit {
			more = true
			return false
		}
		list = append(list, Entry{Name: r.name, Busy: r.peer != ""})
		return true
	})
	return list, more, len(m.users), nil
}

// PresenceVersion implements PresenceVersioner.
func (n *MemoryNode) PresenceVersion(ctx context.Context) (uint64, error) {
	if err := n.alive(); err != nil {
		return 0, err
	}
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	return n.m.version, nil
}

// Send implements Backend: e goes into node's inbox (a copy of it).
func (n *MemoryNode) Send(node string, e *Envelope) bool {
	if n.alive() != nil {
		return false
	}
	n.m.mu.Lock()
	dst := n.m.nodes[node]
	n.m.mu.Unlock()
	if dst == nil {
		return false
	}
	c := *e
	c.Frame = append([]byte(nil), e.Frame...)
	return dst.put(inboxItem{e: &c})
}

func (n *MemoryNode) put(it inboxItem) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dead {
		return false
	}
	select {
	case n.inbox <- it:
		return true
	default:
		return false
	}
}

// Start implements Backend.
func (n *MemoryNode) Start(l Local) error {
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return fmt.Errorf("cluster: node %s started twice", n.id)
	}
	n.started, n.local = true, l
	n.mu.Unlock()
	n.m.mu.Lock()
	n.m.nodes[n.id] = n
	n.m.mu.Unlock()
	go n.run()
	return nil
}

func (n *MemoryNode) run() {
	defer close(n.done)
	for it := range n.inbox {
		switch {
		case it.e == nil && it.down == "":
			return // Close's last word
		case it.e != nil:
			n.local.Deliver(it.e)
		default:
			n.local.NodeDown(it.down)
		}
	}
}

// Alive implements Backend.
func (n *MemoryNode) Alive(node string) bool {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	return n.m.nodes[node] != nil
}

// Ready implements Backend.
func (n *MemoryNode) Ready() error { return n.alive() }

// Close implements Backend.
func (n *MemoryNode) Close(release bool) error {
	n.leave(release)
	return nil
}

// Kill makes the node die as a process killed would: it stops at once, its users' names wait the resume grace
// for a resume on another node, and the other nodes are told it is gone.
func (n *MemoryNode) Kill() { n.leave(false) }

func (n *MemoryNode) leave(release bool) {
	n.once.Do(func() {
		n.mu.Lock()
		started := n.started
		n.dead = true
		if started {
			n.inbox <- inboxItem{} // after what was queued: the inbox is drained, then run ends
		}
		n.mu.Unlock()
		if started {
			<-n.done
		}
		m := n.m
		m.mu.Lock()
		delete(m.nodes, n.id)
		until := time.Now().Add(m.grace)
		for name, r := range m.users {
			if r.node != n.id {
				continue
			}
			if release {
				delete(m.users, name)
				m.index.Delete(r)
				m.version++
			} else if !r.orphaned {
				r.orphaned, r.orphanUntil = true, until
			}
		}
		others := make([]*MemoryNode, 0, len(m.nodes))
		for _, o := range m.nodes {
			others = append(others, o)
		}
		m.mu.Unlock()
		if !release {
			for _, o := range others {
				o.put(inboxItem{down: n.id})
			}
		}
	})
}
