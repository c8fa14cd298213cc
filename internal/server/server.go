// Package server puts tandem together: the HTTP routes (the web client, the signaling WebSocket, /healthz,
// /readyz and /metrics), the WebSocket transport and the hub, with a graceful shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"tandem/internal/auth"
	"tandem/internal/calllog"
	"tandem/internal/certs"
	"tandem/internal/cluster"
	"tandem/internal/firstrun"
	"tandem/internal/hub"
	"tandem/internal/web"
	"tandem/internal/ws"
	"tandem/protocol"
)

// Config is everything a Server needs. DefaultConfig gives tandem's defaults; a zero duration or size means
// "the ws package's default".
type Config struct {
	Addr string // where cmd/tandem listens, e.g. ":9090"

	MaxMessage   int           // largest message, bytes
	SendQueue    int           // bytes queued for a slow client before it is dropped
	Rate         float64       // messages a second per connection; 0: no limit
	Burst        int           // messages at once above Rate
	PingInterval time.Duration // ping a connection silent this long
	Pollers      int           // epoll loops reading the connections; 0: one per two of GOMAXPROCS, at least one
	IdleTimeout  time.Duration // drop a connection silent this long
	// The transport's bounds on strangers (ws.Config has their defaults and meaning): the login deadline, caps on
	// connections in total and per client address, on those not logged in, and on unfinished messages.
	LoginTimeout       time.Duration
	MaxConns           int // 0: from the open-file limit (ws.DefaultMaxConns)
	MaxUnlogged        int // 0: half of MaxConns
	MaxConnsPerAddr    int // negative: no limit
	MaxUnloggedPerAddr int // negative: no limit
	LimitLoopback      bool
	MessageTimeout     time.Duration
	MaxPartial         int // bytes held for unfinished messages, over all connections
	// TrustedProxies are the reverse proxies whose X-Forwarded-For (or Forwarded) header gives the client's
	// address (ws.Config.TrustedProxies): the per-address caps and the login throttle count that address.
	TrustedProxies []netip.Prefix
	// ShutdownTimeout bounds a graceful shutdown, after which remaining connections are dropped.
	ShutdownTimeout time.Duration

	// ICEServers, if not nil, gives each user its ICE servers in the login reply, for the login session given
	// (see hub.Config: it is called with the hub's lock held, so it must be quick and not call the server).
	ICEServers func(name, host, session string) []protocol.ICEServer
	// SessionEnded, if not nil, is told when a login given to ICEServers ends (see hub.Config).
	SessionEnded func(session string)
	// EchoName marks the echo test user in user lists; "" for none.
	EchoName string
	// EchoToken, if not empty, reserves EchoName for the built-in echo peer, which logs in with it (hub.Config).
	EchoToken string
	// EchoMaxCalls bounds the echo user's calls at once (hub.Config); 0: the hub's default.
	EchoMaxCalls int
	// CallCooldown is how long a declined caller waits before calling the same user again (hub.Config); 0: no
	// wait.
	CallCooldown time.Duration
	// WatchQueries bounds the different user lists watched at once (hub.Config); 0: the hub's default.
	WatchQueries int
	// AllowedOrigins, if not empty, limits which web pages may open the signaling WebSocket: a browser request
	// whose Origin is neither one of these (e.g. "https://call.example.org") nor one of tandem's own is refused.
	// tandem's own origins are PublicURL's, and those of Hosts and of localhost, 127.0.0.1 and ::1 with the
	// scheme tandem serves (https with TLS) and the port it listens on; the Host header a client sends plays no
	// part (a page on a name of its own, pointed at tandem, must not pass for tandem's). Empty allows every
	// origin, as the tutorial does (its client may be a file:// page or on another port).
	AllowedOrigins []string
	// EmbedOrigins are the sites (origins, as web.ParseEmbedOrigins returns them) that may put the web client in
	// a frame, and hand it a token with postMessage; none by default: nothing may frame it.
	EmbedOrigins []string
	// Auth, if not nil, decides who may log in (docs/access.md); nil is the open mode. The caller closes it after
	// Serve returns.
	Auth *auth.Auth
	// Hosts are the names and IP addresses tandem's page is opened by: the certificate's names, the ACME domains,
	// the machine's own names and addresses. A name may be a wildcard of one label, "*.example.org".
	Hosts []string
	// PublicURL, if not empty, is the address users open tandem by when it differs from what tandem sees (a
	// reverse proxy, a port forward), e.g. "https://call.example.org/"; its origin is tandem's own.
	PublicURL string

	// RequestTimeout bounds how long a client may take to send a whole HTTP request, headers and body (with TLS,
	// the first request counts from the connection's start, TLS handshake included). Zero: 10 s.
	RequestTimeout time.Duration
	// ResponseTimeout bounds how long an HTTP response may take, writing included (a client that does not read
	// cannot hold it longer). Zero: 30 s.
	ResponseTimeout time.Duration
	// MaxHTTPConns bounds the connections net/http serves at once (with TLS, also those still in their TLS
	// handshake). Idle keep-alive connections are closed to make room; beyond that a new connection is answered
	// 503. Zero: 1024.
	MaxHTTPConns int
	// TLS, if not nil, makes Serve speak HTTPS and WSS; a plain HTTP request on the same port is redirected to
	// https (see the certs package). Nil means plain HTTP.
	TLS *tls.Config
	// PrivateMetrics leaves /metrics off the main listener, for OpsHandler to serve on another (-metrics-addr).
	PrivateMetrics bool
	// Node names this server in the call log (a cluster node's id, when Cluster is set); default the host name.
	// CallLogNames is how users appear in it: calllog.NamesPlain (default) or calllog.NamesHash.
	Node, CallLogNames string

	// Cluster, if not nil, makes this server one node of a cluster (hub.Config.Cluster, docs/cluster.md);
	// ResumeGrace is how long a call with a user of a node that died waits for that user to come back.
	Cluster     cluster.Backend
	ResumeGrace time.Duration
	// DrainWindow is, in a cluster, how long a shutdown spreads the reconnects of this node's users over: each
	// user's connection is closed with 1012 (service restart) in turn, keeping its name and call for its resume
	// on another node (docs/cluster.md). Zero closes them all at once; a single node does not drain.
	DrainWindow time.Duration

	// TURNOverTLS, if not nil (and TLS is set), shares the HTTPS port with TURN over TLS: a TLS connection that
	// carries STUN rather than HTTP is given to it (certs.ListenerConfig.TURN), e.g. turnserver.Server.HandOff.
	TURNOverTLS func(net.Conn)

	// FirstRun, if not nil (and TLS is set), answers plain HTTP on the HTTPS port with the first-run page of a
	// self-signed certificate (package firstrun) instead of a redirect to https.
	FirstRun *firstrun.Page
}

// DefaultConfig returns tandem's defaults: port 9090, as the tutorial, and the limits of docs/protocol.md.
func DefaultConfig() Config {
	return Config{
		Addr:            ":9090",
		MaxMessage:      64 << 10,
		SendQueue:       1 << 20,
		Rate:            200,
		Burst:           1000,
		PingInterval:    20 * time.Second,
		IdleTimeout:     60 * time.Second,
		ShutdownTimeout: 5 * time.Second,

		LoginTimeout:       60 * time.Second,
		MaxConnsPerAddr:    256,
		MaxUnloggedPerAddr: 32,
		MessageTimeout:     30 * time.Second,
		MaxPartial:         64 << 20,
		EchoMaxCalls:       hub.DefaultEchoMaxCalls,
		CallCooldown:       hub.DefaultCallCooldown,
		WatchQueries:       hub.DefaultWatchQueries,
		RequestTimeout:     DefaultRequestTimeout,
		ResponseTimeout:    DefaultResponseTimeout,
		MaxHTTPConns:       DefaultMaxHTTPConns,
		DrainWindow:        DefaultDrainWindow,
	}
}

// DefaultDrainWindow is Config.DrainWindow's default.
const DefaultDrainWindow = 5 * time.Second

// Server is a tandem server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub.Hub
	ws       *ws.Server
	registry *prometheus.Registry
	handler  http.Handler
	origins  *originRule
	http     atomic.Pointer[HTTPServer] // the one Serve runs, for the metrics
	draining atomic.Bool                // a cluster node's shutdown has begun: /readyz says so
	calls    *calllog.Log
	ready    readiness
}

// New checks cfg and builds a Server. It starts nothing: Serve does.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.Rate < 0 || cfg.Burst < 0 {
		return nil, errors.New("server: the rate limit must not be negative")
	}
	if cfg.EchoMaxCalls < 0 {
		return nil, errors.New("server: the echo user's call limit must not be negative")
	}
	if cfg.WatchQueries < 0 {
		return nil, errors.New("server: the limit on watched user lists must not be negative")
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	cooldown := cfg.CallCooldown
	if cooldown == 0 {
		cooldown = -1 // the hub's zero is its default
	}
	if cfg.RequestTimeout < 0 || cfg.ResponseTimeout < 0 || cfg.MaxHTTPConns < 0 {
		return nil, errors.New("server: the HTTP timeouts and connection limit must not be negative")
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ResponseTimeout == 0 {
		cfg.ResponseTimeout = DefaultResponseTimeout
	}
	if cfg.MaxHTTPConns == 0 {
		cfg.MaxHTTPConns = DefaultMaxHTTPConns
	}
	origins, err := newOriginRule(cfg)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	wss, err := ws.NewServer(ws.Config{
		MaxMessage:   cfg.MaxMessage,
		SendQueue:    cfg.SendQueue,
		PingInterval: cfg.PingInterval,
		Pollers:      cfg.Pollers,
		IdleTimeout:  cfg.IdleTimeout,
		Logger:       logger,

		// A cluster node's Redis client keeps the other processors busy: its loops wait parked (ws.Config).
		ParkIdleLoops: cfg.Cluster != nil,

		LoginTimeout:       cfg.LoginTimeout,
		MaxConns:           cfg.MaxConns,
		MaxUnlogged:        cfg.MaxUnlogged,
		MaxConnsPerAddr:    cfg.MaxConnsPerAddr,
		MaxUnloggedPerAddr: cfg.MaxUnloggedPerAddr,
		LimitLoopback:      cfg.LimitLoopback,
		TrustedProxies:     cfg.TrustedProxies,
		MessageTimeout:     cfg.MessageTimeout,
		TotalPartial:       cfg.MaxPartial,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{cfg: cfg, log: logger, origins: origins, ws: wss}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_slow_clients_dropped_total",
			Help: "Connections dropped because they did not read what was sent to them.",
		}, func() float64 { return float64(wss.SlowDrops()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_send_queue_bytes",
			Help: "Bytes waiting in all connections' send queues for clients to read them.",
		}, func() float64 { return float64(wss.Queued()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_panics_total",
			Help: "Panics recovered while serving a connection (each closed that connection alone; see the error log).",
		}, func() float64 { return float64(wss.Panics()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_connections_refused_total",
			Help: "WebSocket connections turned away at a cap on connections (in total, per address, not logged in).",
		}, func() float64 { return float64(wss.Refused()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_login_timeouts_total",
			Help: "Connections closed because they did not log in within -login-timeout.",
		}, func() float64 { return float64(wss.LoginTimeouts()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_partial_message_bytes",
			Help: "Bytes held for messages and handshakes that have not arrived whole, over all connections.",
		}, func() float64 { return float64(wss.Partial()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_http_connections",
			Help: "Connections net/http serves (page loads, /metrics; with TLS also WebSocket handshakes).",
		}, func() float64 {
			if h := s.http.Load(); h != nil {
				return float64(h.Conns())
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_http_connections_refused_total",
			Help: "Connections answered 503 because -max-http-conns connections were busy.",
		}, func() float64 {
			if h := s.http.Load(); h != nil {
				return float64(h.Refused())
			}
			return 0
		}),
	)
	node := cfg.Node
	if cfg.Cluster != nil {
		node = cfg.Cluster.Node()
	}
	calls, err := calllog.New(calllog.Config{Node: node, Names: cfg.CallLogNames, Logger: logger, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.calls = calls
	var authn hub.Authenticator
	if cfg.Auth != nil && cfg.Auth.Mode() != auth.Open {
		authn = cfg.Auth
	}
	s.hub = hub.New(hub.Config{
		Rate:         cfg.Rate,
		Burst:        cfg.Burst,
		ICEServers:   cfg.ICEServers,
		SessionEnded: cfg.SessionEnded,
		EchoName:     cfg.EchoName,
		EchoToken:    cfg.EchoToken,
		EchoMaxCalls: cfg.EchoMaxCalls,
		CallCooldown: cooldown,
		Auth:         authn,
		Logger:       logger,
		Metrics:      hub.NewMetrics(reg),
		Calls:        calls,
		Cluster:      cfg.Cluster,
		ResumeGrace:  cfg.ResumeGrace,
		WatchQueries: cfg.WatchQueries,
	})
	s.registry = reg
	if c, ok := cfg.Cluster.(interface{ Register(prometheus.Registerer) }); ok {
		c.Register(reg)
	}
	s.handler = s.routes()
	return s, nil
}

// Registry is the server's Prometheus registry, for other parts (TURN, the echo peer) to add their metrics to.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Handler serves everything: the WebSocket on / and /ws, the web client, /healthz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	client := web.EmbeddableHandler(s.cfg.EmbedOrigins)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && ws.IsWebSocket(r) {
			s.serveWebSocket(w, r)
			return
		}
		client.ServeHTTP(w, r)
	})
	mux.HandleFunc("/ws", s.serveWebSocket)
	mux.HandleFunc("GET /healthz", serveHealth)
	// /readyz tells a load balancer whether to send this node new users (ops.go); /healthz, liveness, never
	// depends on Redis.
	mux.HandleFunc("GET /readyz", s.serveReady)
	if !s.cfg.PrivateMetrics {
		mux.Handle("GET /metrics", s.metricsHandler())
	}
	// The access mode, for clients before they log in, and the pages that may post the web client a token.
	mux.Handle("GET /auth.json", auth.InfoHandler(s.cfg.Auth, append(slices.Clip(s.cfg.EmbedOrigins), s.cfg.AllowedOrigins...)))
	return mux
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	newHandler := s.acceptWebSocket(&ws.Request{Path: r.URL.Path, Host: r.Host, Origin: r.Header.Get("Origin")})
	if newHandler == nil {
		http.Error(w, "this page's origin may not use this tandem server (see -allowed-origins)", http.StatusForbidden)
		return
	}
	err := s.ws.Upgrade(w, r, newHandler)
	if err != nil && !errors.Is(err, ws.ErrNotWebSocket) {
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
	}
}

// acceptWebSocket says whether a WebSocket handshake may open a session of the hub, and if so makes the session.
// The epoll loops ask it of the handshakes they read themselves (see ws.Server.Listen), serveWebSocket of those
// that came through net/http; a handshake it refuses on a loop is left to net/http, which answers 403.
func (s *Server) acceptWebSocket(r *ws.Request) func(*ws.Conn) ws.Handler {
	if (r.Path != "/" && r.Path != "/ws") || !s.origins.allows(r.Origin) {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return func(c *ws.Conn) ws.Handler { return s.cfg.Auth.Connect(s.hub, c, host) }
}

// Serve serves on ln until ctx is done, then shuts down gracefully: it stops accepting, tells every user in a
// call that the call is over, closes connections with 1001 (going away) and returns within ShutdownTimeout.
// A cluster node drains instead: it stops accepting, answers /readyz with 503, closes its users' connections with
// 1012 (service restart) spread over DrainWindow, keeping their names and calls for their resume on other nodes,
// then leaves the cluster and closes what is left with 1012 within ShutdownTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
		s.origins.serve(scheme, tcp.Port)
	}
	if err := s.hub.Start(); err != nil { // joins the cluster, if any
		return fmt.Errorf("server: %w", err)
	}
	if err := s.ws.Start(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer s.calls.Start()() // the call log's writer, stopped once the calls have ended
	s.ready.state.Store(stateServing)
	handler := s.handler
	if s.cfg.TLS != nil {
		ln = certs.NewListener(ln, s.cfg.TLS, certs.ListenerConfig{
			FirstRequest: s.cfg.RequestTimeout,
			MaxPending:   s.cfg.MaxHTTPConns,
			Logger:       s.log,
			TURN:         s.cfg.TURNOverTLS,
		})
		if s.cfg.FirstRun != nil {
			handler = certs.ServePlain(handler, s.cfg.FirstRun.Handler(handler, certs.RedirectPlain(handler)))
		} else {
			handler = certs.RedirectPlain(handler)
		}
	} else {
		// The epoll loops accept, and answer WebSocket handshakes themselves; net/http gets the rest.
		wsln, err := s.ws.Listen(ln, s.acceptWebSocket)
		if err != nil {
			_ = s.ws.Shutdown(context.Background(), ws.CloseGoingAway, "")
			return fmt.Errorf("server: %w", err)
		}
		ln = wsln
	}
	hs := newHTTPServer(handler, s.cfg, s.log, func(net.Listener) context.Context { return ctx })
	s.http.Store(hs)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	var err error
	select {
	case <-ctx.Done():
		s.ready.state.Store(stateStopping)
		// Close the listener ourselves and let Serve return before Shutdown runs: Shutdown closing a listener
		// that Serve is still starting to use is a data race inside net/http.
		_ = ln.Close()
		<-serveErr
	case err = <-serveErr:
		err = fmt.Errorf("server: %w", err)
	}
	s.ready.state.Store(stateStopping)
	closeCode, closeReason := ws.CloseGoingAway, "the server is shutting down"
	if s.cfg.Cluster != nil {
		// A rolling restart: the users reconnect to the other nodes, a few at a time, and keep their calls.
		s.draining.Store(true)
		s.hub.Drain(context.Background(), s.cfg.DrainWindow)
		closeCode, closeReason = protocol.CloseServiceRestart, "service restart: reconnect and resume"
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	_ = hs.Shutdown(shutCtx) // waits for requests in flight; hijacked WebSockets are closed below
	s.hub.Shutdown()
	if werr := s.ws.Shutdown(shutCtx, closeCode, closeReason); werr != nil {
		s.log.Warn("connections dropped at shutdown", "err", werr)
	}
	return err
}

// Online returns how many users are logged in.
func (s *Server) Online() int { return s.hub.Online() }

// Connections returns how many WebSocket connections are open.
func (s *Server) Connections() int { return s.ws.Len() }
