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
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"tandem/client"
	"tandem/protocol"
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

	// Limit is how long a call may last before the echo peer hangs up. If zero, 2 minutes.
	Limit time.Duration

	// Registerer, if not nil, gets the echo peer's metrics: tandem_echo_peer_connections (a gauge of open peer
	// connections) and tandem_echo_calls_total.
	Registerer prometheus.Registerer

	// Logger receives the echo peer's logs. If nil, nothing is logged.
	Logger *slog.Logger

	// SettingEngine, if not nil, adjusts pion's settings before each peer connection is made; tests use it to keep
	// ICE on 127.0.0.1. Loopback candidates are always gathered (pion leaves them out by default), so that a
	// caller on the same machine, or in a loopback-only network namespace, can reach the echo peer.
	SettingEngine func(*webrtc.SettingEngine)

	// RetryMin and RetryMax bound the wait before reconnecting after the connection to the server is lost or the
	// login is refused; the wait doubles from RetryMin up to RetryMax. If zero, 250 ms and 10 s.
	RetryMin, RetryMax time.Duration
}

// Echo is an echo peer. Make one with New and run it with Run.
type Echo struct {
	url      string
	opts     *client.Options
	name     string
	limit    time.Duration
	log      *slog.Logger
	api      *webrtc.API
	retryMin time.Duration
	retryMax time.Duration

	open  prometheus.Gauge
	calls prometheus.Counter

	loggedIn     chan struct{} // closed at the first successful login
	loggedInOnce sync.Once
}

// New checks cfg and makes an echo peer. It starts nothing.
func New(cfg Config) (*Echo, error) {
	if cfg.URL == "" {
		return nil, errors.New("echo: no server URL")
	}
	e := &Echo{
		url:      cfg.URL,
		opts:     cfg.Client,
		name:     cfg.Name,
		limit:    cfg.Limit,
		log:      cfg.Logger,
		retryMin: cfg.RetryMin,
		retryMax: cfg.RetryMax,
		loggedIn: make(chan struct{}),
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

	api, err := newAPI(cfg.SettingEngine)
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
	if cfg.Registerer != nil {
		if e.open, err = register(cfg.Registerer, e.open); err != nil {
			return nil, err
		}
		if e.calls, err = register(cfg.Registerer, e.calls); err != nil {
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

func newAPI(adjust func(*webrtc.SettingEngine)) (*webrtc.API, error) {
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
	if adjust != nil {
		adjust(&se)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(&me), webrtc.WithInterceptorRegistry(&ir), webrtc.WithSettingEngine(se)), nil
}

// Name returns the name the echo peer logs in as.
func (e *Echo) Name() string { return e.name }

// LoggedIn returns a channel that is closed once the echo peer has logged in for the first time.
func (e *Echo) LoggedIn() <-chan struct{} { return e.loggedIn }

// Run connects to the server, logs in and answers calls until ctx is done; then it hangs up every call (each
// caller gets a leave), closes the connection, waits until every peer connection is released, and returns nil.
// When the connection is lost or the login refused (the name is taken), it tries again after a pause, with the
// resume token of its last login, so that a reconnect after a network blip takes its name back at once.
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
func (e *Echo) session(ctx context.Context, token *string, dropped *[]string) error {
	c, err := client.Dial(ctx, e.url, e.opts)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	loginCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	reply, err := c.Login(loginCtx, e.name, *token)
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
	}
	e.log.Info("echo peer logged in", "url", e.url, "iceServers", len(s.iceServers))
	e.loggedInOnce.Do(func() { close(e.loggedIn) })
	// A resumed session keeps the calls of the old connection in the server, but their peer connections died
	// with it: tell those callers (the server answers not_in_call for any it has told already).
	for _, name := range append(*dropped, reply.Peer) {
		if name != "" {
			s.send(func(ctx context.Context) error { return c.SendLeave(ctx, name, protocol.ReasonHangup) })
		}
	}
	*dropped = nil

	// Reading uses its own context: when ctx ends, hang up every call first, then close the connection, which
	// ends the read.
	stop := context.AfterFunc(ctx, func() {
		s.hangUpAll(true)
		c.Close()
	})
	defer stop()
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

	calls sync.WaitGroup // calls not yet released; added to by the read loop only

	mu     sync.Mutex
	byName map[string]*call // calls in progress by caller name
}

// send sends one message with a bounded wait, logging a failure: a slow or dead connection must not hold a pion
// callback or a timer forever.
func (s *session) send(f func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f(ctx); err != nil && !errors.Is(err, client.ErrClosed) {
		s.echo.log.Debug("send failed", "err", err)
	}
}

func (s *session) handle(m *client.Message) {
	switch m.Type {
	case protocol.TypeOffer:
		s.offer(m.Name, m.Offer)
	case protocol.TypeCandidate:
		if k := s.find(m.Name); k != nil {
			k.addCandidate(m.Candidate)
		}
	case protocol.TypeLeave:
		if k := s.find(m.Name); k != nil {
			k.end("", false)
		}
	case protocol.TypeError:
		s.echo.log.Debug("error from the server", "code", m.Code, "message", m.Message, "request", m.Request, "name", m.Name)
	}
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

// hangUpAll ends every call, telling the callers if leave is set, and returns the callers' names.
func (s *session) hangUpAll(leave bool) []string {
	s.mu.Lock()
	calls := make([]*call, 0, len(s.byName))
	for _, k := range s.byName {
		calls = append(calls, k)
	}
	s.mu.Unlock()
	names := make([]string, 0, len(calls))
	for _, k := range calls {
		k.end(protocol.ReasonHangup, leave)
		names = append(names, k.peer)
	}
	return names
}
