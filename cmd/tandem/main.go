// Command tandem is a self-hosted WebRTC calling server: it serves the web client, relays the signaling
// messages that set calls up, and keeps going under load and abuse. Run it with no flags to listen on :9090.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"tandem/internal/auth"
	"tandem/internal/cli"
	"tandem/internal/server"
	"tandem/internal/version"
	"tandem/internal/ws"
	"tandem/protocol"
)

func main() {
	cli.Main("tandem", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

// options are the command line's settings beyond server.Config.
type options struct {
	logFormat string
	logLevel  string
	pprof     string
	version   bool
	metrics   string
}

// run is tandem: it parses args (each flag may also come from a TANDEM_* environment variable), listens, and
// serves until ctx is done.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if cmd := subcommand(args); cmd != nil { // tandem user ..., tandem invite ...: usercmd.go
		return cmd(args, getenv, os.Stdin, stdout, stderr)
	}
	cfg := server.DefaultConfig()
	var opts options
	fs := flag.NewFlagSet("tandem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "address to listen on for HTTP and WebSocket")
	fs.IntVar(&cfg.MaxMessage, "max-message", cfg.MaxMessage, "largest signaling message accepted, in bytes")
	fs.IntVar(&cfg.SendQueue, "send-queue", cfg.SendQueue, "bytes that may wait for a client that does not read before it is dropped")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "messages a second each connection may send on average (0: no limit)")
	fs.IntVar(&cfg.Burst, "burst", cfg.Burst, "messages a connection may send at once above -rate")
	fs.IntVar(&cfg.Pollers, "pollers", cfg.Pollers, "epoll loops reading the connections (0: one per two of GOMAXPROCS, at least one)")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", cfg.PingInterval, "ping a connection that has been silent this long")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "drop a connection that has been silent this long")
	fs.DurationVar(&cfg.LoginTimeout, "login-timeout", cfg.LoginTimeout, "close a connection that has not logged in this long after connecting (1008)")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "WebSocket connections held at most (0: the open-file limit less a 64th of it, at least 64, kept for TURN, echo and HTTP)")
	fs.IntVar(&cfg.MaxUnlogged, "max-unlogged", cfg.MaxUnlogged, "connections that have not logged in, at most (0: half of -max-conns)")
	fs.IntVar(&cfg.MaxConnsPerAddr, "max-conns-per-addr", cfg.MaxConnsPerAddr, "WebSocket connections from one client address (IPv4, or IPv6 /64) at most; -1: no limit")
	fs.IntVar(&cfg.MaxUnloggedPerAddr, "max-unlogged-per-addr", cfg.MaxUnloggedPerAddr, "connections from one client address that have not logged in, at most; -1: no limit")
	fs.BoolVar(&cfg.LimitLoopback, "limit-loopback", cfg.LimitLoopback, "apply the per-address limits to loopback clients too (by default exempt: a reverse proxy on this host, the load generator)")
	fs.DurationVar(&cfg.MessageTimeout, "message-timeout", cfg.MessageTimeout, "close a connection whose message has not arrived whole this long after it began (1008)")
	fs.IntVar(&cfg.MaxPartial, "max-partial", cfg.MaxPartial, "bytes held for messages not yet arrived whole, over all connections; past it the connection adding more is closed (1013)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "longest graceful shutdown")
	fs.Func("allowed-origins", "web pages (origins, comma-separated, e.g. https://call.example.org) allowed to use the signaling WebSocket beside tandem's own; empty: any, as the tutorial", func(v string) error {
		cfg.AllowedOrigins = nil
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
			}
		}
		return nil
	})
	var aopts accessOptions // who may log in: access.go
	aopts.register(fs)
	fs.StringVar(&cfg.PublicURL, "public-url", "", "the address users open tandem by, if not what tandem sees (behind a reverse proxy or a port forward), e.g. https://call.example.org/; its pages count as tandem's own for -allowed-origins")
	fs.IntVar(&cfg.MaxHTTPConns, "max-http-conns", cfg.MaxHTTPConns, "connections served over HTTP at once (page loads, /metrics; with TLS also WebSocket handshakes); idle ones make room, more are answered 503")
	fs.StringVar(&opts.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&opts.logLevel, "log-level", "info", "log level: debug (tandem's decisions), info (a line per call), warn or error; trace adds the libraries' debug lines")
	fs.StringVar(&cfg.CallLogNames, "log-names", "plain", "users in the call log: plain (their names) or hash (a keyed hash of each name, the same while tandem runs)")
	fs.StringVar(&opts.pprof, "pprof", "", "serve Go's profiler on this loopback address, e.g. 127.0.0.1:6060 (for measuring; empty: off)")
	fs.BoolVar(&opts.version, "version", false, "print tandem's version and exit")
	fs.StringVar(&opts.metrics, "metrics-addr", "", "serve /metrics, /healthz, /readyz and the profiler on this address instead (e.g. 127.0.0.1:9100), keeping /metrics off the public port; empty: /metrics on -addr")
	var nopts netOptions
	nopts.register(fs, getenv)
	var eopts echoOptions // the echo test call: echo.go
	eopts.register(fs)
	fs.IntVar(&cfg.EchoMaxCalls, "echo-max-calls", cfg.EchoMaxCalls, "echo test calls at once; a caller beyond them is told the test line is busy")
	var copts clusterOptions // cluster mode: cluster.go
	copts.register(fs)
	fs.DurationVar(&cfg.CallCooldown, "call-cooldown", cfg.CallCooldown, "how long a caller who was declined (or gave up unanswered) waits before calling the same user again (0: no wait)")
	fs.IntVar(&cfg.WatchQueries, "max-watched-lists", cfg.WatchQueries, "different user lists (query and limit) clients may watch at once on this node; a watch beyond them is answered once, without updates")
	intro := "tandem is a self-hosted WebRTC calling server: it serves the web client, relays the signaling\nmessages that set calls up, and runs a STUN/TURN server and an echo test user."
	if err := cli.ParseSections(fs, "TANDEM_", intro, usageSections, args, getenv); err != nil {
		return err
	}
	if opts.version {
		fmt.Fprintln(stdout, version.Long("tandem"))
		return nil
	}
	fs.Visit(func(f *flag.Flag) {
		nopts.turnAddrExplicit = nopts.turnAddrExplicit || f.Name == "turn-addr"
		nopts.turnTLSExplicit = nopts.turnTLSExplicit || f.Name == "turn-tls-port"
	})
	logger, err := cli.NewLogger(stderr, opts.logFormat, opts.logLevel)
	if err != nil {
		return err
	}

	if limit, err := cli.RaiseOpenFileLimit(); err != nil {
		logger.Warn("could not raise the open file limit", "err", err)
	} else {
		conns := cfg.MaxConns
		if conns == 0 {
			conns = ws.DefaultMaxConns(limit)
		}
		logger.Info("open file limit", "files", limit, "connections", conns)
	}

	if opts.pprof != "" {
		_, stopPprof, err := startPprof(opts.pprof, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	netw, err := newNetwork(&nopts, logger) // HTTPS and TURN: network.go
	if err != nil {
		return err
	}
	cfg.TLS, cfg.ICEServers, cfg.SessionEnded = netw.tls, netw.iceServers, netw.sessionEnded
	cfg.TURNOverTLS = netw.turnOverTLS()
	cfg.FirstRun = netw.firstRun // plain HTTP on the HTTPS port explains a self-signed certificate
	cfg.Hosts = netw.ownHosts(cfg.Addr)
	if eopts.on {
		if cfg.EchoName, err = protocol.ValidateName([]byte(eopts.name)); err != nil {
			return fmt.Errorf("-echo-name: %w", err)
		}
		eopts.name, eopts.maxCalls = cfg.EchoName, cfg.EchoMaxCalls
		netw.turnCf.ServiceUser = eopts.name // the echo peer answers many calls with one login
		if cfg.EchoToken, err = eopts.reserve(); err != nil {
			return err
		}
	}
	cfg.PrivateMetrics = opts.metrics != ""
	cfg.Node = copts.node // the call log's node: -node-id, or the host name (a cluster node's own id with -redis)
	// The login state the nodes of a cluster share (internal/auth/shared.go) goes in the cluster's Redis, through
	// the cluster's client: one set of settings and connections.
	if copts.redis != "" {
		if copts.client, err = copts.dial(logger); err != nil {
			return err
		}
		defer copts.client.Close() // last: after the node has left the cluster and authn is closed
	}
	aopts.redis = auth.RedisConfig{URL: copts.redis, Prefix: copts.prefix, Client: copts.client}
	authn, err := aopts.open(nopts.dataDir, getenv, cfg.LimitLoopback, logger)
	if err != nil {
		return err
	}
	defer authn.Close() // after the server has stopped
	cfg.Auth = authn
	cfg.TrustedProxies, cfg.EmbedOrigins = aopts.proxies, aopts.embedders
	if err := copts.configure(&cfg, logger); err != nil {
		return err
	}
	srv, err := server.New(cfg, logger)
	if err != nil {
		return err
	}
	srv.Registry().MustRegister(version.Collector())
	if opts.metrics != "" {
		opsAddr, stopOps, err := startOps(opts.metrics, srv.OpsHandler(), logger)
		if err != nil {
			return err
		}
		defer stopOps()
		fmt.Fprintf(stdout, "tandem: metrics, health and profiler on http://%s/ (/metrics, /healthz, /readyz, /debug/pprof/)\n", opsAddr)
	}
	if authn.Mode() != auth.Open {
		srv.Registry().MustRegister(authn.Collectors()...)
	}
	// Listen first, so that "address in use" comes back at once.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	if err := netw.start(srv, ln.Addr()); err != nil {
		_ = ln.Close()
		return err
	}
	defer netw.close()
	if eopts.on {
		if d := splitList(nopts.acmeDomains); len(d) > 0 {
			eopts.serverName = d[0]
		}
		stopEcho, err := startEcho(ctx, eopts, ln.Addr(), netw, srv.Registry(), logger)
		if err != nil {
			_ = ln.Close()
			return err
		}
		defer stopEcho()
	}
	logger.Info("tandem is listening", "addr", ln.Addr().String(), "https", netw.tls != nil, "version", version.String(), "auth", string(authn.Mode()))
	warnIfOpen(authn, ln.Addr(), &nopts, logger)
	netw.printURLs(stdout, ln.Addr(), nopts.showQR(stdout))
	start := time.Now()
	err = srv.Serve(ctx, ln)
	logger.Info("tandem stopped", "uptime", time.Since(start).Round(time.Second))
	return err
}

// displayHost turns a listening address into something a person can open: ":9090" becomes "localhost:9090".
func displayHost(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
