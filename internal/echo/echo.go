// Package echo is tandem's echo test call: a built-in user (named "echo" by default) that answers any call and
// sends the caller's own audio and video back, so that a person alone can check their camera, microphone and
// network path through the server. It is a WebRTC peer built on pion that logs in through the tandem client like
// any other user, answers every offer with its own peer connection, forwards each incoming RTP stream back
// unchanged (no transcoding), echoes data-channel messages, and hangs up after a time limit.
//
// It runs inside the tandem server by default (connected to the server's own listener) and as its own command,
// tandem-echo, against any tandem server. docs/echo.md describes both.
package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"tandem/client"
	"tandem/internal/netaddr"
	"tandem/protocol"
)

// Defaults of Config's bounds.
const (
	// DefaultMaxCalls is Config.MaxCalls when zero. Each call holds a peer connection (about 14 descriptors, 30
	// goroutines and 0.4 to 1.6 MiB) and forwards its caller's media.
	DefaultMaxCalls = 16

	// DefaultConnectTimeout is Config.ConnectTimeout when zero.
	DefaultConnectTimeout = 30 * time.Second
)

// Bounds of what one caller can make the echo peer do; they cannot be changed (docs/limits.md).
const (
	// callQueueMessages and callQueueBytes bound the signaling messages of one call waiting for its goroutine
	// (offers and candidates: each is pion work). A call whose queue overflows is ended.
	callQueueMessages = 32
	callQueueBytes    = 256 << 10

	// offerBurst offers may come at once in a call, then one an offerInterval: a browser renegotiates a few times
	// in a call (an ICE restart, a track added); a caller who offers faster has its call ended.
	offerBurst    = 10
	offerInterval = time.Second

	// maxRemoteCandidates bounds the caller's candidates (addresses the echo peer sends connectivity checks to) in
	// one ICE session of a call; more are ignored. A browser gathers a few per network interface.
	maxRemoteCandidates = 32

	// coolDown is how long the offers of a caller whose call was ended for flooding are refused; at most
	// maxCooling callers are remembered, and told at most once a refuseEvery.
	coolDown    = 10 * time.Second
	maxCooling  = 1024
	refuseEvery = time.Second

	// sendTimeout bounds the wait for one message to the server.
	sendTimeout = 5 * time.Second
)

// Config configures an echo peer. Only URL is required.
type Config struct {
	// URL is the tandem server's WebSocket: ws://host:9090/ or wss://host:9090/.
	URL string

	// Client configures the connection to the server (a TLS configuration for wss://, for example). If nil, the
	// defaults.
	Client *client.Options

	// Name is the name the echo peer logs in as. If empty, "echo".
	Name string

	// Token, if not empty, is sent with every login: the server's reservation of Name for this echo peer (tandem's
	// server.Config.EchoToken), so that nobody else can log in as the echo user, not even while the echo peer
	// reconnects. If empty, the echo peer logs in like any user and takes its name back after a reconnect with
	// the resume token of its last login.
	Token string

	// Limit is how long a call may last before the echo peer hangs up. If zero, 2 minutes.
	Limit time.Duration

	// MaxCalls caps the calls in progress at once (each is a peer connection, until it is released); an offer
	// from one more caller is refused with a leave (reason declined). If zero, DefaultMaxCalls.
	MaxCalls int

	// ConnectTimeout is how long a call may go without its media connection up, counted from its offer (or from
	// an offer that replaced its peer connection); then the echo peer hangs up. If zero, DefaultConnectTimeout.
	ConnectTimeout time.Duration

	// Peers decides which of a caller's ICE candidates the echo peer may send to (connectivity checks, then media):
	// candidates with other addresses, in the offer's SDP or trickled, are dropped, and so are peer-reflexive ones,
	// so that a caller cannot aim the server's packets at its own networks (loopback, private, link-local ...)
	// or reflect them. tandem passes the TURN relay's policy (-turn-allow-loopback, -turn-allow-peers). If nil, the
	// default policy: globally routed unicast addresses only. Candidates that name a host (mDNS .local names) are
	// always dropped: the echo peer resolves no names.
	Peers *netaddr.PeerPolicy

	// Relays, if not nil, is the server's own TURN server: the echo peer may send to its live relays although
	// Peers refuses their network (a LAN address), so that a caller whose only path is a relay on that server
	// can test.
	Relays RelaySet

	// Registerer, if not nil, gets the echo peer's metrics: tandem_echo_peer_connections (a gauge of open peer
	// connections), tandem_echo_calls_total and tandem_echo_calls_cut_total (calls refused or ended by a bound,
	// by reason).
	Registerer prometheus.Registerer

	// Logger receives the echo peer's logs. If nil, nothing is logged.
	Logger *slog.Logger

	// SettingEngine, if not nil, adjusts pion's settings before each peer connection is made; tests use it to keep
	// ICE on 127.0.0.1. Loopback candidates are always gathered (pion leaves them out by default), so that a
	// caller on the same machine, or in a loopback-only network namespace, can reach the echo peer; mDNS is off and
	// remote addresses are filtered by Peers, unless the adjustment changes that.
	SettingEngine func(*webrtc.SettingEngine)

	// RetryMin and RetryMax bound the wait before reconnecting after the connection to the server is lost or the
	// login is refused; the wait doubles from RetryMin up to RetryMax. If zero, 250 ms and 10 s.
	RetryMin, RetryMax time.Duration
}

// RelaySet tells which addresses are live relays of a TURN server (*turnserver.Server is one).
type RelaySet interface {
	// IsRelay reports whether a is the address of a live relay.
	IsRelay(a netip.AddrPort) bool
	// HasRelayOn reports whether a live relay has the address ip, on any port.
	HasRelayOn(ip netip.Addr) bool
}

// Echo is an echo peer. Make one with New and run it with Run.
type Echo struct {
	url            string
	opts           *client.Options
	name           string
	token          string
	limit          time.Duration
	maxCalls       int
	connectTimeout time.Duration
	peers          *netaddr.PeerPolicy
	relays         RelaySet
	log            *slog.Logger
	api            *webrtc.API
	retryMin       time.Duration
	retryMax       time.Duration

	open  prometheus.Gauge
	calls prometheus.Counter
	cut   *prometheus.CounterVec

	// beforeHandle, if not nil, is called before a call's goroutine handles a message (tests inject faults).
	beforeHandle func(caller, typ string)

	loggedIn     chan struct{} // closed at the first successful login
	loggedInOnce sync.Once
}

// Reasons for tandem_echo_calls_cut_total.
const (
	cutMaxCalls = "max_calls" // refused: MaxCalls calls in progress
	cutFlood    = "flood"     // offers too fast, or the call's queue overflowed; refused during the cool-down
	cutNoMedia  = "no_media"  // the media connection was not up within ConnectTimeout
	cutPanic    = "panic"     // a panic while serving the call (a bug): logged with its stack, that call alone ended
)

// New checks cfg and makes an echo peer. It starts nothing.
func New(cfg Config) (*Echo, error) {
	if cfg.URL == "" {
		return nil, errors.New("echo: no server URL")
	}
	e := &Echo{
		url:            cfg.URL,
		opts:           cfg.Client,
		name:           cfg.Name,
		token:          cfg.Token,
		limit:          cfg.Limit,
		maxCalls:       cfg.MaxCalls,
		connectTimeout: cfg.ConnectTimeout,
		peers:          cfg.Peers,
		relays:         cfg.Relays,
		log:            cfg.Logger,
		retryMin:       cfg.RetryMin,
		retryMax:       cfg.RetryMax,
		loggedIn:       make(chan struct{}),
	}
	if e.name == "" {
		e.name = "echo"
	}
	if e.limit == 0 {
		e.limit = 2 * time.Minute
	}
	if e.limit < 0 {
		return nil, fmt.Errorf("echo: negative time limit %v", e.limit)
	}
	if e.maxCalls == 0 {
		e.maxCalls = DefaultMaxCalls
	}
	if e.maxCalls < 0 {
		return nil, fmt.Errorf("echo: negative call cap %d", e.maxCalls)
	}
	if e.connectTimeout == 0 {
		e.connectTimeout = DefaultConnectTimeout
	}
	if e.connectTimeout < 0 {
		return nil, fmt.Errorf("echo: negative connect timeout %v", e.connectTimeout)
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("echo", e.name)
	if e.retryMin <= 0 {
		e.retryMin = 250 * time.Millisecond
	}
	if e.retryMax < e.retryMin {
		e.retryMax = max(10*time.Second, e.retryMin)
	}

	api, err := newAPI(e.allowsRemoteIP, cfg.SettingEngine)
	if err != nil {
		return nil, err
	}
	e.api = api

	e.open = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tandem_echo_peer_connections",
		Help: "Peer connections the echo peer has open.",
	})
	e.calls = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tandem_echo_calls_total",
		Help: "Calls the echo peer has answered.",
	})
	e.cut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_echo_calls_cut_total",
		Help: "Calls the echo peer refused or ended because of a bound: max_calls, flood (offers too fast, too many messages waiting), no_media (not connected in time).",
	}, []string{"reason"})
	for _, r := range []string{cutMaxCalls, cutFlood, cutNoMedia, cutPanic} {
		e.cut.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		if e.open, err = register(cfg.Registerer, e.open); err != nil {
			return nil, err
		}
		if e.calls, err = register(cfg.Registerer, e.calls); err != nil {
			return nil, err
		}
		if e.cut, err = register(cfg.Registerer, e.cut); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// register registers c, or returns the collector already registered under its name (a second echo peer in one
// process shares the first one's metrics).
func register[C prometheus.Collector](r prometheus.Registerer, c C) (C, error) {
	err := r.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("echo: register metrics: %w", err)
	}
	return c, nil
}

// newAPI makes the pion API of every call: default codecs and interceptors, loopback candidates gathered, no mDNS,
// and remote candidates kept only when remoteIP allows their address; adjust may change these.
func newAPI(remoteIP func(net.IP) bool, adjust func(*webrtc.SettingEngine)) (*webrtc.API, error) {
	var me webrtc.MediaEngine
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("echo: codecs: %w", err)
	}
	var ir interceptor.Registry
	if err := webrtc.RegisterDefaultInterceptors(&me, &ir); err != nil {
		return nil, fmt.Errorf("echo: interceptors: %w", err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetRemoteIPFilter(remoteIP)
	if adjust != nil {
		adjust(&se)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(&me), webrtc.WithInterceptorRegistry(&ir), webrtc.WithSettingEngine(se)), nil
}

// allowsRemoteIP is pion's last check of every remote candidate, peer-reflexive ones included, which it knows by
// address only: one that Peers allows, or that a relay of the server's TURN server has.
func (e *Echo) allowsRemoteIP(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	return e.peers.Allows(a) || (e.relays != nil && e.relays.HasRelayOn(a.Unmap()))
}

// allowsRemote reports whether the echo peer may send to a caller's candidate at a: Peers allows its address, or
// it is a live relay of the server's TURN server.
func (e *Echo) allowsRemote(a netip.AddrPort) bool {
	return e.peers.Allows(a.Addr()) || (e.relays != nil && e.relays.IsRelay(a))
}

// Name returns the name the echo peer logs in as.
func (e *Echo) Name() string { return e.name }

// LoggedIn returns a channel that is closed once the echo peer has logged in for the first time.
func (e *Echo) LoggedIn() <-chan struct{} { return e.loggedIn }

// Run connects to the server, logs in and answers calls until ctx is done; then it hangs up every call (each
// caller gets a leave), closes the connection, waits until every peer connection is released, and returns nil.
// When the connection is lost or the login refused (the name is taken), it tries again after a pause, with
// Config.Token or else the resume token of its last login, so that a reconnect after a network blip takes its
// name back at once.
func (e *Echo) Run(ctx context.Context) error {
	var (
		token   string
		dropped []string // callers whose calls ended with a lost connection, nobody told
	)
	wait := e.retryMin
	for {
		start := time.Now()
		err := e.session(ctx, &token, &dropped)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*e.retryMax {
			wait = e.retryMin // it worked for a while: start again from the shortest pause
		}
		e.log.Warn("echo peer disconnected; will reconnect", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, e.retryMax)
	}
}

// session is one connection to the server: log in, then answer calls until the connection ends. dropped holds
// the callers of the previous session that were not told their call ended; it is set to this session's.
//
// The read loop never waits on pion: each call's messages go to the call's own goroutine through a bounded queue,
// and whatever the loop itself has to send (a refusal) goes through the session's sender. So nothing a caller
// sends can make the echo peer stop reading, and be dropped by the server as a slow reader.
func (e *Echo) session(ctx context.Context, token *string, dropped *[]string) error {
	c, err := client.Dial(ctx, e.url, e.opts)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	loginToken := e.token
	if loginToken == "" {
		loginToken = *token
	}
	loginCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	reply, err := c.Login(loginCtx, e.name, loginToken)
	cancel()
	if errors.Is(err, client.ErrNameTaken) && *token != "" {
		*token = "" // the old session is gone and somebody else took the name
	}
	if err != nil {
		return err
	}
	*token = reply.Token
	s := &session{
		echo:       e,
		c:          c,
		iceServers: iceServers(reply.ICEServers),
		byName:     make(map[string]*call),
		cooling:    make(map[string]*cooling),
		refusals:   make(chan refusal, 64),
	}
	e.log.Info("echo peer logged in", "url", e.url, "iceServers", len(s.iceServers), "reserved", e.token != "")
	e.loggedInOnce.Do(func() { close(e.loggedIn) })
	// A resumed session keeps the calls of the old connection in the server, but their peer connections died
	// with it: tell those callers (the server answers not_in_call for any it has told already).
	for _, name := range append(*dropped, reply.Peer) {
		if name != "" {
			s.send(func(ctx context.Context) error { return c.SendLeave(ctx, name, protocol.ReasonHangup) })
		}
	}
	*dropped = nil

	var sender sync.WaitGroup
	sender.Go(s.sendRefusals)
	// Reading uses its own context: when ctx ends, hang up every call first, then close the connection, which
	// ends the read.
	stop := context.AfterFunc(ctx, func() {
		s.hangUpAll(true)
		c.Close()
	})
	defer stop()
	defer sender.Wait()
	defer close(s.refusals) // the read loop is the only sender, and it has returned
	defer s.calls.Wait()
	defer func() { *dropped = s.hangUpAll(false) }()
	for {
		m, err := c.Read(context.Background())
		var de *client.DecodeError
		if errors.As(err, &de) {
			e.log.Debug("undecodable message", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		s.handle(m)
	}
}

// iceServers turns the login reply's ICE servers into pion's.
func iceServers(in []protocol.ICEServer) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// session holds the calls of one connection to the server.
type session struct {
	echo       *Echo
	c          *client.Client
	iceServers []webrtc.ICEServer

	calls    sync.WaitGroup // calls not yet released; added to by the read loop only
	refusals chan refusal   // leaves the read loop wants sent, by sendRefusals

	mu      sync.Mutex
	byName  map[string]*call    // calls in progress by caller name
	live    int                 // calls not yet released (in byName, or hanging up)
	cooling map[string]*cooling // callers whose calls were ended for flooding, by name
}

// cooling is a caller whose call was ended for flooding: its offers are refused until until.
type cooling struct {
	until time.Time
	told  time.Time // the last refusal sent
}

// refusal is a leave for a caller that has no call.
type refusal struct{ name, reason string }

// send sends one message with a bounded wait, logging a failure: a slow or dead connection must not hold a pion
// callback, a call's goroutine or a timer forever.
func (s *session) send(f func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	if err := f(ctx); err != nil && !errors.Is(err, client.ErrClosed) {
		s.echo.log.Debug("send failed", "err", err)
	}
}

// refuse has a leave sent to name, which has no call, without waiting: when too many are waiting, it is dropped.
func (s *session) refuse(name, reason string) {
	select {
	case s.refusals <- refusal{name, reason}:
	default:
		s.echo.log.Debug("too many refusals waiting; not telling", "caller", name)
	}
}

// sendRefusals sends the refusals until the channel is closed.
func (s *session) sendRefusals() {
	for r := range s.refusals {
		s.send(func(ctx context.Context) error { return s.c.SendLeave(ctx, r.name, r.reason) })
	}
}

// handle acts on one message from the server, on the read loop: it hands a call's messages to the call.
func (s *session) handle(m *client.Message) {
	switch m.Type {
	case protocol.TypeOffer:
		s.offer(m)
	case protocol.TypeCandidate:
		if k := s.find(m.Name); k != nil {
			k.enqueue(m)
		}
	case protocol.TypeLeave:
		if k := s.find(m.Name); k != nil {
			k.end("")
		}
	case protocol.TypeError:
		s.echo.log.Debug("error from the server", "code", m.Code, "message", m.Message, "request", m.Request, "name", m.Name)
	}
}

// offer hands an offer to its caller's call, starting one for a new caller unless the caller is cooling down or
// the echo peer has MaxCalls calls.
func (s *session) offer(m *client.Message) {
	name := m.Name
	e := s.echo
	s.mu.Lock()
	k := s.byName[name]
	if k == nil {
		now := time.Now()
		if cl := s.cooling[name]; cl != nil && now.Before(cl.until) {
			tell := now.Sub(cl.told) >= refuseEvery
			if tell {
				cl.told = now
			}
			s.mu.Unlock()
			e.cut.WithLabelValues(cutFlood).Inc()
			if tell {
				s.refuse(name, protocol.ReasonDeclined)
			}
			return
		}
		if s.live >= e.maxCalls {
			s.mu.Unlock()
			e.log.Info("refusing a call: too many calls", "caller", name, "calls", e.maxCalls)
			e.cut.WithLabelValues(cutMaxCalls).Inc()
			s.refuse(name, protocol.ReasonDeclined)
			return
		}
		k = s.newCallLocked(name)
	}
	s.mu.Unlock()
	if !k.takeOffer() {
		e.log.Info("offers too fast; hanging up", "caller", name)
		k.cut()
		return
	}
	k.enqueue(m)
}

// coolLocked refuses name's offers for coolDown; s.mu is held.
func (s *session) coolLocked(name string) {
	now := time.Now()
	if len(s.cooling) >= maxCooling {
		for n, cl := range s.cooling {
			if !now.Before(cl.until) {
				delete(s.cooling, n)
			}
		}
		if len(s.cooling) >= maxCooling {
			return
		}
	}
	s.cooling[name] = &cooling{until: now.Add(coolDown), told: now}
}

// find returns the call with name, or, for a server that does not name the sender (the tutorial's), the only call.
func (s *session) find(name string) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.byName[name]; k != nil || name != "" {
		return k
	}
	if len(s.byName) == 1 {
		for _, k := range s.byName {
			return k
		}
	}
	return nil
}

// hangUpAll ends every call, telling the callers if tell is set (and waiting, a bounded time, until they are
// told), and returns the callers' names.
func (s *session) hangUpAll(tell bool) []string {
	s.mu.Lock()
	calls := make([]*call, 0, len(s.byName))
	for _, k := range s.byName {
		calls = append(calls, k)
	}
	s.mu.Unlock()
	names := make([]string, 0, len(calls))
	reason := ""
	if tell {
		reason = protocol.ReasonHangup
	}
	for _, k := range calls {
		k.end(reason)
		names = append(names, k.peer)
	}
	if tell {
		deadline := time.NewTimer(sendTimeout)
		defer deadline.Stop()
		for _, k := range calls {
			select {
			case <-k.told:
			case <-deadline.C:
				return names
			}
		}
	}
	return names
}
