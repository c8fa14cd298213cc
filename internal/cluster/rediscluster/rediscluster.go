// Package rediscluster is the Redis backend of a tandem cluster (cluster.Backend): the Directory in Redis keys
// changed only by Lua scripts (scripts.go), the Bus as Redis pub/sub channels of each node, with an ordered outbox
// per destination node that packs what it has queued into one message (pack.go), and the membership as node leases
// with a sweeper that any node runs.
//
// What it guarantees: a name has one holder at a time (claims are atomic; every write is fenced by the login's
// session id); the messages one node sends another arrive in the order they were sent (one writer per
// destination, on one connection; Redis passes what one connection publishes to a subscriber's connection in
// order, on either of the node's channels; a pack is unpacked in order); a node that dies is noticed
// within a lease and a sweep, and its users' names wait a resume grace for their users to come back on another
// node; a subscription that stops delivering is noticed by a probe the node sends itself, and rebuilt; when
// Redis loses its data (a restart without persistence) every node registers its users again. Pub/sub is
// at-most-once: a message to a node that is not subscribed at that moment is retried for a short while and
// then reported undelivered.
package rediscluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"tandem/internal/cluster"
)

// Config configures a Backend. A zero field takes the default named beside it.
type Config struct {
	// URL is the Redis server: redis://[user:password@]host:port/db, rediss:// for TLS, or unix:///path. With
	// Sentinel: redis://[user:password@]sentinel:26379/db?addr=sentinel2:26379&master_set=name, the hosts being
	// the sentinels (user and password are the master's; sentinel_user and sentinel_password the sentinels').
	URL string
	// Node is this node's id, unique in the cluster; default the host name and a random suffix.
	Node string
	// Prefix is put before every key and channel; default "tandem:". Clusters sharing a Redis need their own.
	Prefix string
	// Heartbeat is how often the node renews its lease and sweeps for dead nodes; default 1 s.
	Heartbeat time.Duration
	// Lease is how long a node counts as alive after its last heartbeat; default 3 s (three heartbeats). A node
	// that died is found within the lease and four heartbeats (its absence is confirmed by two sweeps).
	Lease time.Duration
	// ResumeGrace is how long a dead node's users' names wait for a resume on another node; default
	// cluster.DefaultResumeGrace (10 s).
	ResumeGrace time.Duration
	// Probe: when the node's subscription has delivered nothing for this long, the node publishes a probe to
	// itself; if nothing arrives for three times as long, the subscription is rebuilt. Default 1 s.
	Probe time.Duration
	// Timeout bounds one round trip to Redis; default 3 s.
	Timeout time.Duration
	// SentinelRefresh, with Sentinel, is how often the node asks the sentinels which server is the master,
	// besides following their announcements; default 2 s.
	SentinelRefresh time.Duration
	// Cleanup is how often the node looks for names Redis says its sessions hold that none of them does (a
	// claim whose reply came too late, a release lost in a failover) and frees them (cleanup.go); default
	// DefaultCleanup (30 s); negative: never.
	Cleanup time.Duration
	// Logger receives the backend's logs; default slog.Default().
	Logger *slog.Logger
	// Client, if not nil, is the Redis client to use (NewClient), shared with other parts of the process (the
	// access control's shared state); its owner closes it, after Close. Nil: the backend makes its own from URL.
	Client rueidis.Client
}

// Defaults of Config.
const (
	DefaultPrefix    = "tandem:"
	DefaultHeartbeat = time.Second
	DefaultLease     = 3 * time.Second
	DefaultProbe     = time.Second
	DefaultTimeout   = 3 * time.Second
	// DefaultSentinelRefresh is Config.SentinelRefresh's default.
	DefaultSentinelRefresh = 2 * time.Second
	// outboxSize bounds the envelopes waiting for one destination node.
	outboxSize = 8192
	// retryFor is how long a pack to a node that is not subscribed is retried before its messages are reported
	// undelivered.
	retryFor = 2 * time.Second
	// singlesFor is how long an outbox sends single envelopes to a node found not to take packs (a node of a
	// version before packs, during a rolling upgrade) before it tries a pack again.
	singlesFor = 10 * time.Second
)

// Backend is one node of a cluster on Redis.
type Backend struct {
	cfg    Config
	client rueidis.Client
	inc    string // this process's incarnation
	log    *slog.Logger
	m      *metrics
	// ownClient: client was made by New (not given in Config.Client), and Close closes it.
	ownClient bool

	mu       sync.Mutex
	local    cluster.Local
	outboxes map[string]*outbox
	epoch    string    // the shared state's epoch as last seen; "" before the first heartbeat
	replID   string    // the replication id of the Redis the heartbeats reach (replicationID); "" for unknown
	beatOK   time.Time // the last successful heartbeat
	// sweepAfter: no sweep before then. After a failover the new master has the leases as the old one last
	// replicated them: the other nodes get a lease's time to follow before a lapsed one counts as a death.
	sweepAfter time.Time
	subOK      bool // subscribed
	regsDue    bool // this node's users must be registered again
	regsGen    int  // how many times regsDue was set (the cleanup pass's check of its users starts over)
	// suspect: the connection to Redis was lost (Redis may have restarted empty): no claims until a heartbeat has
	// checked the epoch (and the users are registered again if it changed).
	suspect bool
	live    map[string]bool      // nodes whose lease was current at the last sweep
	missing map[string]time.Time // nodes once live, and since when the sweeps have not found them
	closing bool

	// The cleanup pass's (cleanup.go): passMu makes passes one at a time; findings are the last check's sessions
	// of this node whose record was another's, made while regsGen was findingsGen.
	passMu      sync.Mutex
	findings    map[string]holderFinding
	findingsGen int

	lastRecv atomic.Int64 // unix nanoseconds of the last message on the node's channel
	// legacy (tests only, set before Start): the node behaves as one of the version before packs: it subscribes
	// to its single-envelope channel only, sends single envelopes, and drops a pack as undecodable.
	legacy bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

var (
	_ cluster.Backend           = (*Backend)(nil)
	_ cluster.PresenceVersioner = (*Backend)(nil)
)

// New checks cfg and connects (lazily: Redis need not be up yet).
func New(cfg Config) (*Backend, error) {
	if cfg.URL == "" && cfg.Client == nil {
		return nil, errors.New("rediscluster: no Redis URL")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Heartbeat, DefaultHeartbeat)
	def(&cfg.Lease, DefaultLease)
	def(&cfg.ResumeGrace, cluster.DefaultResumeGrace)
	def(&cfg.Probe, DefaultProbe)
	def(&cfg.Timeout, DefaultTimeout)
	def(&cfg.SentinelRefresh, DefaultSentinelRefresh)
	if cfg.Cleanup == 0 {
		cfg.Cleanup = DefaultCleanup
	}
	if cfg.Lease < 2*cfg.Heartbeat {
		return nil, fmt.Errorf("rediscluster: the lease (%v) must be at least two heartbeats (%v)", cfg.Lease, cfg.Heartbeat)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Node == "" {
		cfg.Node = DefaultNodeID()
	}
	if strings.ContainsAny(cfg.Node, " \t\r\n") {
		return nil, fmt.Errorf("rediscluster: node id %q has white space", cfg.Node)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client, owned := cfg.Client, false
	if client == nil {
		var err error
		if client, err = NewClient(cfg); err != nil {
			return nil, err
		}
		owned = true
	}
	b := &Backend{
		cfg: cfg, client: client, ownClient: owned, inc: randomID(), log: cfg.Logger.With("node", cfg.Node),
		outboxes: make(map[string]*outbox), live: make(map[string]bool), missing: make(map[string]time.Time),
		stop: make(chan struct{}),
	}
	b.m = newMetrics(b)
	return b, nil
}

// NewClient connects (lazily: Redis need not be up yet) to the Redis at cfg.URL, as cfg.Node, each write bounded
// by cfg.Timeout, for a Backend (Config.Client) and whatever else of the process shares it. Only the URL, Node,
// Timeout, SentinelRefresh and Logger of cfg are read (zero: their defaults).
func NewClient(cfg Config) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("rediscluster: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.SentinelRefresh <= 0 {
		cfg.SentinelRefresh = DefaultSentinelRefresh
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	// Lessons of other Redis users: no client-side cache (not used), no endless retries (every call here has a
	// deadline and an answer for failure), a short dial timeout and TCP keepalive, so that a dead connection is
	// noticed within seconds.
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.Dialer = net.Dialer{Timeout: 2 * time.Second, KeepAlive: time.Second}
	opt.ConnWriteTimeout = cfg.Timeout
	opt.ClientName = "tandem-" + cfg.Node
	if opt.Sentinel.MasterSet != "" {
		// Sentinel: its connections are dialled like the others; and the client checks the master with the
		// sentinels every few seconds besides following their +switch-master events, one of which, missed,
		// would otherwise leave it on the old master for good.
		opt.Sentinel.Dialer = opt.Dialer
		opt.Sentinel.TopologyRefreshInterval = cfg.SentinelRefresh
		if u, err := url.Parse(cfg.URL); err == nil {
			q := u.Query()
			opt.Sentinel.Username, opt.Sentinel.Password = q.Get("sentinel_user"), q.Get("sentinel_password")
		}
		opt.Sentinel.ClientName = opt.ClientName
	}
	if opt.Sentinel.MasterSet == "" {
		// Standalone: a Redis that is not up yet is no reason not to start (the client dials again when used).
		opt.ForceSingleClient = true
	}
	client, err := rueidis.NewClient(opt)
	if client == nil {
		return nil, fmt.Errorf("rediscluster: %w", err)
	}
	if err != nil {
		logger.Warn("cluster: Redis is not reachable yet; the node is not ready until it is", "err", err)
	}
	return client, nil
}

// Register adds the backend's metrics to reg.
func (b *Backend) Register(reg prometheus.Registerer) { b.m.register(reg, b) }

// DefaultNodeID is a node id unique per process start: the host name and a random suffix.
func DefaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	host = strings.Map(func(r rune) rune {
		if r <= ' ' {
			return -1
		}
		return r
	}, host)
	return host + "-" + randomID()[:8]
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashToken(token string) string {
	if token == "" {
		return ""
	}
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// channel is node's channel for single envelopes: every node subscribes to it, as the nodes of every version
// before packs did.
func (b *Backend) channel(node string) string { return b.cfg.Prefix + "ch:" + node }

// packChannel is node's channel for packs (pack.go): a node subscribes to it, in the same SUBSCRIBE as to its
// channel, only if it unpacks them. A pack published to a node that did not subscribe it reaches no subscriber,
// and is sent again as single envelopes on its channel.
func (b *Backend) packChannel(node string) string { return b.cfg.Prefix + "chp:" + node }

func (b *Backend) idxMember(name string) string { return strings.ToLower(name) + "\x00" + name }

func unavailable(err error) error { return fmt.Errorf("%w: %w", cluster.ErrUnavailable, err) }

// Node implements cluster.Backend.
func (b *Backend) Node() string { return b.cfg.Node }

// Claim implements cluster.Directory.
func (b *Backend) Claim(ctx context.Context, c cluster.Claim) (cluster.ClaimResult, error) {
	if err := b.canClaim(); err != nil {
		return cluster.ClaimResult{}, err
	}
	vals, err := claimScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, c.Name, b.idxMember(c.Name), b.cfg.Node,
		b.inc, c.Session, hashToken(c.Token), hashToken(c.NewToken), strconv.FormatUint(c.Caller, 10)}).AsStrSlice()
	if err != nil {
		return cluster.ClaimResult{}, unavailable(err)
	}
	switch {
	case len(vals) == 1 && vals[0] == "claimed":
		return cluster.ClaimResult{Outcome: cluster.Claimed, Token: c.NewToken}, nil
	case len(vals) == 1 && vals[0] == "taken":
		return cluster.ClaimResult{Outcome: cluster.Taken}, nil
	case len(vals) == 7 && vals[0] == "resumed":
		caller, _ := strconv.ParseUint(vals[6], 10, 64)
		return cluster.ClaimResult{Outcome: cluster.Resumed, Token: c.Token, Old: cluster.Route{Node: vals[1], Session: vals[2]},
			Peer: vals[3], PeerRoute: cluster.Route{Node: vals[4], Session: vals[5]}, Caller: caller}, nil
	}
	return cluster.ClaimResult{}, fmt.Errorf("rediscluster: unexpected claim reply %q", vals)
}

// canClaim refuses new logins while this node cannot vouch for the shared state: before its first heartbeat,
// after its lease lapsed, or while its users are being registered again.
func (b *Backend) canClaim() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closing:
		return fmt.Errorf("node %s is leaving the cluster: %w", b.cfg.Node, cluster.ErrUnavailable)
	case b.epoch == "" || time.Since(b.beatOK) > b.cfg.Lease:
		return fmt.Errorf("node %s has no lease in Redis: %w", b.cfg.Node, cluster.ErrUnavailable)
	case b.regsDue || b.suspect:
		return fmt.Errorf("node %s is registering its users again: %w", b.cfg.Node, cluster.ErrUnavailable)
	}
	return nil
}

// Release implements cluster.Directory.
func (b *Backend) Release(ctx context.Context, name, session string) error {
	if err := releaseScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, name, b.cfg.Node, session}).Error(); err != nil {
		return unavailable(err)
	}
	return nil
}

// SetPeer implements cluster.Directory.
func (b *Backend) SetPeer(ctx context.Context, name, session, peer string) error {
	if err := setPeerScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, name, b.cfg.Node, session, peer}).Error(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Locate implements cluster.Directory.
func (b *Backend) Locate(ctx context.Context, name string) (cluster.Route, bool, error) {
	vals, err := locateScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, name}).AsStrSlice()
	if err != nil {
		return cluster.Route{}, false, unavailable(err)
	}
	if len(vals) != 2 {
		return cluster.Route{}, false, nil
	}
	return cluster.Route{Node: vals[0], Session: vals[1]}, true, nil
}

// List implements cluster.Directory.
func (b *Backend) List(ctx context.Context, prefix string, limit int) ([]cluster.Entry, bool, int, error) {
	vals, err := listScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, prefix, strconv.Itoa(limit)}).ToArray()
	if err != nil || len(vals) < 2 {
		return nil, false, 0, unavailable(fmt.Errorf("list: %w", err))
	}
	total, _ := vals[0].AsInt64()
	more, _ := vals[1].AsInt64()
	list := make([]cluster.Entry, 0, (len(vals)-2)/2)
	for i := 2; i+1 < len(vals); i += 2 {
		name, _ := vals[i].ToString()
		busy, _ := vals[i+1].AsInt64()
		list = append(list, cluster.Entry{Name: name, Busy: busy == 1})
	}
	return list, more == 1, int(total), nil
}

// PresenceVersion implements cluster.PresenceVersioner: the counter the scripts bump on every change a user list
// can show.
func (b *Backend) PresenceVersion(ctx context.Context) (uint64, error) {
	n, err := b.client.Do(ctx, b.client.B().Get().Key(b.cfg.Prefix+"pv").Build()).AsUint64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable(fmt.Errorf("presence version: %w", err))
	}
	return n, nil
}

// Alive implements cluster.Backend.
func (b *Backend) Alive(node string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live[node] && b.missing[node].IsZero()
}

// Ready implements cluster.Backend.
func (b *Backend) Ready() error {
	if err := b.canClaim(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.subOK {
		return fmt.Errorf("node %s is not subscribed to its channel: %w", b.cfg.Node, cluster.ErrUnavailable)
	}
	return nil
}

// Start implements cluster.Backend: it subscribes, and starts the heartbeat (lease, sweep, recovery).
func (b *Backend) Start(l cluster.Local) error {
	b.mu.Lock()
	if b.local != nil {
		b.mu.Unlock()
		return errors.New("rediscluster: started twice")
	}
	b.local = l
	b.mu.Unlock()
	b.checkEviction()
	b.wg.Add(2)
	go b.subscribeLoop()
	go b.heartbeatLoop()
	if b.cfg.Cleanup > 0 {
		b.wg.Add(1)
		go b.cleanupLoop()
	}
	return nil
}

// checkEviction warns when Redis may evict keys: an evicted record is a name two users can hold.
func (b *Backend) checkEviction() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	m, err := b.client.Do(ctx, b.client.B().ConfigGet().Parameter("maxmemory-policy").Build()).AsStrMap()
	if err != nil {
		return // not up yet, or CONFIG is disabled (managed Redis): docs/cluster.md says what to set
	}
	if p := m["maxmemory-policy"]; p != "" && p != "noeviction" {
		b.log.Error("Redis may evict keys (maxmemory-policy is not noeviction): an evicted name could be held twice; set maxmemory-policy noeviction", "policy", p)
	}
}

// heartbeatLoop renews the lease, sweeps, notices dead nodes and lost state, and registers this node's users
// again when needed.
func (b *Backend) heartbeatLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Heartbeat / 2)
	defer t.Stop()
	var last time.Time
	for {
		if time.Since(last) >= b.cfg.Heartbeat || b.needsBeat() {
			b.beat()
			last = time.Now()
		}
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
	}
}

func (b *Backend) needsBeat() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.regsDue || b.suspect || b.epoch == ""
}

func (b *Backend) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	replID := b.replicationID(ctx) // before the heartbeat: a switch after it is seen at the next one
	vals, err := heartbeatScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, b.cfg.Node, b.inc,
		strconv.FormatInt(b.cfg.Lease.Milliseconds(), 10), randomID()}).ToArray()
	if err != nil || len(vals) != 2 {
		b.m.heartbeatFailures.Inc()
		b.log.Warn("cluster: Redis heartbeat failed", "err", err)
		b.mu.Lock()
		b.suspect = true // Redis may restart empty: its epoch is checked before the next claim
		b.mu.Unlock()
		return
	}
	epoch, _ := vals[0].ToString()
	held, _ := vals[1].AsInt64()
	b.mu.Lock()
	first := b.epoch == ""
	changed := !first && epoch != b.epoch
	if changed {
		b.m.epochChanges.Inc()
		b.log.Warn("cluster: Redis lost its data (its epoch changed): registering this node's users again")
	}
	if !first && held == 0 && !changed {
		b.log.Warn("cluster: this node's lease had run out: registering its users again")
	}
	// Another master (a Sentinel failover): what the old one took after the new one was promoted, and before
	// this node followed, is lost with it (the old master becomes a replica and takes the new one's data). The
	// epoch is the same (it was replicated), so the users are registered again as after a loss.
	switched := !first && replID != "" && b.replID != "" && replID != b.replID
	if replID != "" {
		b.replID = replID
	}
	if switched {
		b.sweepAfter = time.Now().Add(b.cfg.Lease + b.cfg.Heartbeat)
	}
	if switched && !changed {
		b.m.masterSwitches.Inc()
		b.log.Warn("cluster: Redis is another server now (a failover, or a restart): registering this node's users again")
	}
	if changed || switched || (!first && held == 0) {
		b.regsDue = true
		b.regsGen++
		// The other nodes need a heartbeat to come back too: whom the sweeps miss counts from now.
		clear(b.missing)
	}
	b.epoch, b.beatOK = epoch, time.Now()
	sweep := b.beatOK.After(b.sweepAfter)
	due := b.regsDue
	if !due {
		b.suspect = false
	}
	b.mu.Unlock()
	if due && b.register(ctx) {
		b.mu.Lock()
		b.regsDue, b.suspect = false, false
		b.mu.Unlock()
	}
	if sweep {
		b.sweep(ctx)
	}
}

// replicationID returns the replication id of the Redis the client reaches (INFO replication's master_replid): a
// promoted replica gets a new one, and so does a Redis that restarts. "" when INFO is refused (some managed
// Redis services rename it): then only the epoch tells of a loss.
func (b *Backend) replicationID(ctx context.Context) string {
	info, err := b.client.Do(ctx, b.client.B().Info().Section("replication").Build()).ToString()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "master_replid:"); ok {
			return v
		}
	}
	return ""
}

// register puts every user of this node back in the shared state; a name someone else holds now is taken from
// this node's user (Local.Evict). It reports whether all went through.
func (b *Backend) register(ctx context.Context) bool {
	regs := b.local.Registrations()
	const batch = 256
	for len(regs) > 0 {
		n := min(batch, len(regs))
		execs := make([]rueidis.LuaExec, n)
		for i, r := range regs[:n] {
			execs[i] = rueidis.LuaExec{Args: []string{b.cfg.Prefix, r.Name, b.idxMember(r.Name), b.cfg.Node, b.inc,
				r.Session, hashToken(r.Token), strconv.FormatUint(r.Caller, 10), r.Peer}}
		}
		for i, res := range registerScript.ExecMulti(ctx, b.client, execs...) {
			ok, err := res.AsInt64()
			if err != nil {
				b.log.Warn("cluster: registering users again failed; retrying", "err", err)
				return false
			}
			if ok == 0 {
				b.m.conflicts.Inc()
				b.local.Evict(regs[i].Name, regs[i].Session)
			}
		}
		regs = regs[n:]
	}
	b.log.Info("cluster: this node's users are registered again")
	return true
}

// sweep runs the sweeper and tells the hub of nodes that went away.
func (b *Backend) sweep(ctx context.Context) {
	ids, err := sweepScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, strconv.FormatInt(b.cfg.ResumeGrace.Milliseconds(), 10)}).AsStrSlice()
	if err != nil {
		return
	}
	live := make(map[string]bool, len(ids))
	for _, id := range ids {
		live[id] = true
	}
	now := time.Now()
	b.mu.Lock()
	var gone []string
	for id := range b.live {
		if !live[id] && id != b.cfg.Node {
			if _, ok := b.missing[id]; !ok {
				b.missing[id] = now
			}
		}
	}
	for id, since := range b.missing {
		switch {
		case live[id]:
			delete(b.missing, id)
		case now.Sub(since) >= 2*b.cfg.Heartbeat: // missing from the sweeps of two heartbeats: gone
			delete(b.missing, id)
			gone = append(gone, id)
		default:
			live[id] = true // not gone yet: still compared at the next sweep
		}
	}
	b.live = live
	b.mu.Unlock()
	for _, id := range gone {
		b.m.nodesDown.Inc()
		b.log.Warn("cluster: a node's lease ran out", "gone", id)
		b.local.NodeDown(id)
	}
}

// subscribeLoop keeps the node subscribed to its channel: a dedicated connection whose loss, or whose silence
// past the probe's deadline, makes it subscribe again on a new one.
func (b *Backend) subscribeLoop() {
	defer b.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		if b.subscribeOnce() {
			backoff = 50 * time.Millisecond
		} else {
			select {
			case <-b.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// subscribeOnce subscribes on a new connection and serves it until it fails; it reports whether it was
// subscribed at all.
func (b *Backend) subscribeOnce() bool {
	dc, release := b.client.Dedicate()
	defer release()
	// Both channels in one SUBSCRIBE: Redis runs a command at a time, so a publisher finds the node subscribed
	// to both or to neither (a pack that reaches no subscriber is sent again as single envelopes only when the
	// node has not subscribed to packs: the single envelopes then reach it or not, as the pack would have).
	channels := []string{b.channel(b.cfg.Node), b.packChannel(b.cfg.Node)}
	if b.legacy {
		channels = channels[:1]
	}
	subscribed := make(chan struct{}, len(channels))
	errs := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: b.onMessage,
		OnSubscription: func(s rueidis.PubSubSubscription) {
			if s.Kind == "subscribe" {
				select {
				case subscribed <- struct{}{}:
				default:
				}
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	err := dc.Do(ctx, dc.B().Subscribe().Channel(channels...).Build()).Error()
	for range channels {
		if err != nil {
			break
		}
		select {
		case <-subscribed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	cancel()
	if err != nil {
		dc.Close()
		return false
	}
	b.lastRecv.Store(time.Now().UnixNano())
	b.mu.Lock()
	b.subOK = true
	b.mu.Unlock()
	b.m.subscriptions.Inc()
	defer func() {
		b.mu.Lock()
		b.subOK = false
		b.mu.Unlock()
		dc.Close()
	}()
	probe := time.NewTicker(b.cfg.Probe)
	defer probe.Stop()
	for {
		select {
		case <-b.stop:
			return true
		case err := <-errs:
			b.log.Warn("cluster: the subscription's connection to Redis was lost; subscribing again", "err", err)
			b.mu.Lock()
			b.suspect = true // Redis may have restarted: its epoch is checked before the next claim
			b.mu.Unlock()
			return true
		case <-probe.C:
			idle := time.Since(time.Unix(0, b.lastRecv.Load()))
			if idle > 3*b.cfg.Probe {
				b.m.probeFailures.Inc()
				b.log.Warn("cluster: the subscription delivers nothing (the probe did not come back); subscribing again", "idle", idle.Round(time.Millisecond))
				return true
			}
			if idle >= b.cfg.Probe {
				b.publishProbe()
			}
		}
	}
}

func (b *Backend) publishProbe() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	msg := encode(&cluster.Envelope{Kind: cluster.Probe, FromNode: b.cfg.Node})
	_ = b.client.Do(ctx, b.client.B().Publish().Channel(b.channel(b.cfg.Node)).Message(rueidis.BinaryString(msg)).Build()).Error()
}

// onMessage delivers what came on the node's channels: a single envelope, or a pack of them, in order.
func (b *Backend) onMessage(m rueidis.PubSubMessage) {
	b.lastRecv.Store(time.Now().UnixNano())
	var e cluster.Envelope
	if isPack(m.Message) && !b.legacy {
		n, err := unpack(m.Message, &e, b.deliver)
		b.m.received.Add(float64(n))
		if err != nil {
			b.log.Warn("cluster: undecodable pack on the node's channel", "err", err, "delivered", n)
		}
		return
	}
	if err := decodeString(m.Message, &e); err != nil {
		b.log.Warn("cluster: undecodable message on the node's channel", "err", err)
		return
	}
	if e.Kind == cluster.Probe {
		return
	}
	b.m.received.Inc()
	b.local.Deliver(&e)
}

// deliver gives the hub an envelope of a pack.
func (b *Backend) deliver(e *cluster.Envelope) {
	if e.Kind != cluster.Probe {
		b.local.Deliver(e)
	}
}

// Send implements cluster.Backend.
func (b *Backend) Send(node string, e *cluster.Envelope) bool {
	b.mu.Lock()
	o := b.outboxes[node]
	if o == nil && !b.closing {
		o = &outbox{b: b, node: node, q: make(chan []byte, outboxSize), free: make(chan []byte, freeBuffers)}
		b.outboxes[node] = o
		b.wg.Add(1)
		go o.run()
	}
	b.mu.Unlock()
	if o == nil {
		return false
	}
	var buf []byte
	select {
	case buf = <-o.free:
	default:
	}
	select {
	case o.q <- appendEnvelope(buf, e):
		return true
	default:
		b.m.undelivered.Inc()
		return false
	}
}

const (
	// freeBuffers is how many encoded messages' buffers an outbox keeps for the next ones, and maxFreeBuffer the
	// largest it keeps: the relay path then allocates no buffer per message (a relayed offer is a few KB).
	freeBuffers   = 256
	maxFreeBuffer = 16 << 10
)

// outbox holds the messages for one node and publishes them, in order: all it has queued at once, in one pack,
// up to maxPack bytes.
type outbox struct {
	b    *Backend
	node string
	q    chan []byte
	free chan []byte // buffers of packed messages, for Send to encode the next ones into
	// next is a message taken from q that did not fit in the last pack: the first of the next one.
	next []byte
	// pack is the buffer packs are built in, kept while the client holds it no more (Redis answered for it).
	pack []byte
	// singlesUntil: the node did not take a pack (it subscribes to its channel for single envelopes only: a node
	// of a version before packs); until then it is sent single envelopes.
	singlesUntil time.Time
	cmds         rueidis.Commands // single envelopes' commands, reused
}

func (o *outbox) run() {
	defer o.b.wg.Done()
	for {
		msg := o.next
		o.next = nil
		if msg == nil {
			select {
			case msg = <-o.q:
			case <-o.b.stop:
				o.flush()
				return
			}
		}
		o.publish(o.fill(msg))
	}
}

// flush publishes what is queued at shutdown, once.
func (o *outbox) flush() {
	for {
		msg := o.next
		o.next = nil
		if msg == nil {
			select {
			case msg = <-o.q:
			default:
				return
			}
		}
		o.publish(o.fill(msg))
	}
}

// fill packs first and what is queued after it, up to maxPack bytes (first alone may be more); a message that
// does not fit is kept for the next pack. The messages' buffers go back to Send once copied.
func (o *outbox) fill(first []byte) []byte {
	pack := o.pack
	o.pack = nil
	if pack == nil {
		pack = make([]byte, 0, maxPack)
	}
	pack = appendPacked(startPack(pack), first)
	o.recycle(first)
	for {
		select {
		case msg := <-o.q:
			if len(pack)+packedLen(msg) > maxPack {
				o.next = msg
				return pack
			}
			pack = appendPacked(pack, msg)
			o.recycle(msg)
			continue
		default:
		}
		return pack
	}
}

// publish sends a pack: in one PUBLISH on the node's pack channel, or as single envelopes, pipelined, on its
// channel when it does not take packs. Envelopes that reached no subscriber (the node is resubscribing, or gone)
// are sent again, with the ones after them, for up to retryFor; then each is reported undelivered. The pack's
// buffer is kept for the next one when Redis has answered for every command that carried it (the client then
// holds it no more); after a failure or a timeout it is left to the garbage collector.
func (o *outbox) publish(pack []byte) {
	b := o.b
	deadline := time.Now().Add(retryFor)
	wait := 20 * time.Millisecond
	held := false // the client may still hold pack
	for {
		var err error
		sent := 0 // single envelopes delivered
		if !b.legacy && time.Now().After(o.singlesUntil) {
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
			var n int64
			n, err = b.client.Do(ctx, b.client.B().Publish().Channel(b.packChannel(o.node)).Message(rueidis.BinaryString(pack)).Build()).AsInt64()
			cancel()
			if err == nil && n > 0 {
				b.m.publishes.Inc()
				b.m.sent.Add(float64(countPacked(pack)))
				break
			}
			if err != nil {
				held = true
			}
		}
		if err == nil { // the node does not take packs (or is not subscribed): single envelopes
			var singles bool
			sent, singles, err = o.publishSingles(pack)
			if err != nil {
				held = true
			}
			if singles && !b.legacy {
				if time.Now().After(o.singlesUntil) {
					b.log.Info("cluster: a node takes single messages only (an older version): not packing for it for a while", "to", o.node)
				}
				o.singlesUntil = time.Now().Add(singlesFor)
			}
		}
		if sent > 0 {
			// Only the envelopes not delivered are sent again: moved to the front of pack, or, if the client may
			// still hold it, copied into a new one.
			pack, held = dropPacked(pack, sent, held), false
		}
		unsent := countPacked(pack)
		if unsent == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.m.undelivered.Add(float64(unsent))
			b.log.Warn("cluster: messages to a node could not be delivered", "to", o.node, "messages", unsent)
			var e cluster.Envelope
			_, _ = unpack(rueidis.BinaryString(pack), &e, func(e *cluster.Envelope) {
				d := *e
				d.Frame = append([]byte(nil), e.Frame...) // the hub may keep what it is given
				b.local.Undelivered(&d)
			})
			break
		}
		select {
		case <-time.After(wait):
		case <-b.stop:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
	if !held && cap(pack) <= 2*maxPack {
		o.pack = pack[:0]
	}
}

// publishSingles publishes pack's envelopes one by one, pipelined, on the node's channel for single envelopes. It
// returns how many (from the first) reached a subscriber, and whether any did (reached).
func (o *outbox) publishSingles(pack []byte) (sent int, reached bool, err error) {
	b := o.b
	ch := b.channel(o.node)
	cmds := o.cmds[:0]
	eachPacked(pack, func(env []byte) {
		cmds = append(cmds, b.client.B().Publish().Channel(ch).Message(rueidis.BinaryString(env)).Build())
	})
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	res := b.client.DoMulti(ctx, cmds...)
	cancel()
	clear(cmds)
	o.cmds = cmds
	for _, r := range res {
		n, rerr := r.AsInt64()
		if rerr != nil {
			if _, isReply := rueidis.IsRedisErr(rerr); !isReply {
				err = rerr // the client may still hold the rest
			}
			break
		}
		if n == 0 {
			break
		}
		sent++
	}
	b.m.publishes.Add(float64(len(res)))
	b.m.sent.Add(float64(sent))
	return sent, sent > 0, err
}

// recycle keeps the buffer of a packed message for a later one, unless it is large or enough are kept.
func (o *outbox) recycle(msg []byte) {
	if cap(msg) > maxFreeBuffer {
		return
	}
	select {
	case o.free <- msg[:0]:
	default:
	}
}

// Close implements cluster.Backend: the outboxes are flushed, the loops stop, and the node leaves (with
// release, its users' names are freed; without, they wait their resume grace).
func (b *Backend) Close(release bool) error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return nil
	}
	b.closing = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	rel := "0"
	if release {
		rel = "1"
	}
	err := leaveScript.Exec(ctx, b.client, nil, []string{b.cfg.Prefix, b.cfg.Node, b.inc, rel}).Error()
	if b.ownClient {
		b.client.Close()
	}
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// encode writes an envelope: a version byte, kind, flags, caller id, five strings each with its length (uvarint),
// then the frame.
func encode(e *cluster.Envelope) []byte { return appendEnvelope(nil, e) }

// appendEnvelope encodes e into buf's storage (its length is ignored), growing it if it is too small.
func appendEnvelope(buf []byte, e *cluster.Envelope) []byte {
	n := 12 + len(e.From) + len(e.FromNode) + len(e.FromSession) + len(e.To) + len(e.ToSession) + 5*2 + len(e.Frame)
	if cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	buf = buf[:0]
	var flags byte
	if e.Accepted {
		flags |= 1
	}
	if e.Forwarded {
		flags |= 2
	}
	buf = append(buf, 1, byte(e.Kind), flags)
	buf = binary.LittleEndian.AppendUint64(buf, e.Caller)
	for _, s := range [...]string{e.From, e.FromNode, e.FromSession, e.To, e.ToSession} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	return append(buf, e.Frame...)
}

var errBadEnvelope = errors.New("rediscluster: bad envelope")

// decode reads an envelope from buf, which it copies: e holds none of buf.
func decode(buf []byte, e *cluster.Envelope) error { return decodeString(string(buf), e) }

// decodeString reads an envelope from msg without copying its frame: e.Frame is msg's own bytes, which must not
// be written to (nothing does: the hub reads a frame, and copies what it keeps). The names are copied, so that
// a name the hub keeps (a stand-in's, for a call) does not keep the whole message in memory.
func decodeString(msg string, e *cluster.Envelope) error {
	if len(msg) < 11 || msg[0] != 1 {
		return errBadEnvelope
	}
	e.Kind, e.Accepted, e.Forwarded = cluster.Kind(msg[1]), msg[2]&1 != 0, msg[2]&2 != 0
	e.Caller = binary.LittleEndian.Uint64([]byte(msg[3:11]))
	msg = msg[11:]
	for _, s := range [...]*string{&e.From, &e.FromNode, &e.FromSession, &e.To, &e.ToSession} {
		l, n := uvarint(msg)
		if n <= 0 || uint64(len(msg)-n) < l {
			return errBadEnvelope
		}
		*s = strings.Clone(msg[n : n+int(l)])
		msg = msg[n+int(l):]
	}
	e.Frame = unsafe.Slice(unsafe.StringData(msg), len(msg))
	return nil
}

// uvarint is binary.Uvarint of a string.
func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -(i + 1) // overflow
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}
