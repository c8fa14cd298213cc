package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/client"
	"tandem/internal/echo"
	"tandem/internal/netaddr"
)

// echoOptions are the flags of the built-in echo test call (docs/echo.md).
type echoOptions struct {
	on       bool
	name     string
	limit    time.Duration
	maxCalls int // the server's -echo-max-calls: the echo peer holds itself to the same cap

	serverName string // the TLS server name to ask for: the first ACME domain, if any
	token      string // the echo name's reservation: only the echo peer, which logs in with it, may take the name
}

func (o *echoOptions) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.on, "echo", true, "run the echo test call: a built-in user that sends each caller's audio and video back")
	fs.StringVar(&o.name, "echo-name", "echo", "the name of the echo test user")
	fs.DurationVar(&o.limit, "echo-limit", 2*time.Minute, "the longest echo test call")
}

// reserve makes the random secret that reserves the echo name for this process's echo peer
// (server.Config.EchoToken), new at each start.
func (o *echoOptions) reserve() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("the echo name's reservation: %w", err)
	}
	o.token = base64.RawURLEncoding.EncodeToString(b)
	return o.token, nil
}

// echoPeers is the address policy for the echo peer's remote candidates: the TURN relay's, from the operator's
// switches (-turn-allow-loopback, -turn-allow-peers), also when there is no TURN server, so that a caller can no
// more aim the echo peer at the server's networks than it can a relay.
func echoPeers(n *network) (*netaddr.PeerPolicy, error) {
	cf := n.turnCf
	if !n.turnOn {
		cf.AllowLoopback = n.opts.turnAllowLoopback
		for _, p := range splitList(n.opts.turnAllowPeers) {
			prefix, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, fmt.Errorf("-turn-allow-peers: %w", err)
			}
			cf.AllowedPeers = append(cf.AllowedPeers, prefix)
		}
	}
	return netaddr.NewPeerPolicy(cf.AllowLoopback, cf.AllowedPeers, cf.DeniedPeers), nil
}

// startEcho runs the echo peer in this process until ctx is done, connected to the server's own listener at addr
// over a loopback WebSocket: wss when the server serves TLS, with the certificate unchecked since the other end is
// this process, and the first name the certificate is for as SNI (ACME needs one). It logs in with the name's
// reservation (o.token), applies the TURN relay's address policy to callers' candidates, and may reach the
// relays of the built-in TURN server, which netw has started.
// The returned stop ends it (each caller gets a leave) and waits until every peer connection is released.
func startEcho(ctx context.Context, o echoOptions, addr net.Addr, netw *network, reg prometheus.Registerer, logger *slog.Logger) (stop func(), err error) {
	peers, err := echoPeers(netw)
	if err != nil {
		return nil, err
	}
	cfg := echo.Config{Name: o.name, Token: o.token, Limit: o.limit, MaxCalls: o.maxCalls, Peers: peers,
		Registerer: reg, Logger: logger.With("component", "echo")}
	if netw.turn != nil {
		cfg.Relays = netw.turn
	}
	if o.maxCalls <= 0 {
		return nil, fmt.Errorf("-echo-max-calls %d: must be at least 1", o.maxCalls)
	}
	url, opts := "ws://", (*client.Options)(nil)
	if netw.tls != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, ServerName: o.serverName}
		url, opts = "wss://", &client.Options{HTTPClient: &http.Client{Transport: tr}}
	}
	cfg.URL, cfg.Client = url+selfHost(addr)+"/", opts
	e, err := echo.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Run(ctx) // it returns when ctx is done, and logs its own troubles
	}()
	return func() { cancel(); <-done }, nil
}

// selfHost is the host:port at which this process reaches its own listener: a loopback address when it listens
// on all interfaces.
func selfHost(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil && ip.IsUnspecified() && !hasIPv4Loopback() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// hasIPv4Loopback reports whether 127.0.0.1 is there to connect to (it is not in an IPv6-only network namespace).
func hasIPv4Loopback() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			return true
		}
	}
	return false
}
