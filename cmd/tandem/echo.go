package main

import (
	"context"
	"crypto/tls"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/client"
	"tandem/internal/echo"
)

// echoOptions are the flags of the built-in echo test call (docs/echo.md).
type echoOptions struct {
	on    bool
	name  string
	limit time.Duration

	serverName string // the TLS server name to ask for: the first ACME domain, if any
}

func (o *echoOptions) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.on, "echo", true, "run the echo test call: a built-in user that sends each caller's audio and video back")
	fs.StringVar(&o.name, "echo-name", "echo", "the name of the echo test user")
	fs.DurationVar(&o.limit, "echo-limit", 2*time.Minute, "the longest echo test call")
}

// startEcho runs the echo peer in this process until ctx is done, connected to the server's own listener at addr
// over a loopback WebSocket: wss when the server serves TLS (serverTLS not nil), with the certificate unchecked
// since the other end is this process, and the first name the certificate is for as SNI (ACME needs one).
// The returned stop ends it (each caller gets a leave) and waits until every peer connection is released.
func startEcho(ctx context.Context, o echoOptions, addr net.Addr, serverTLS *tls.Config, reg prometheus.Registerer, logger *slog.Logger) (stop func(), err error) {
	url, opts := "ws://", (*client.Options)(nil)
	if serverTLS != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, ServerName: o.serverName}
		url, opts = "wss://", &client.Options{HTTPClient: &http.Client{Transport: tr}}
	}
	url += selfHost(addr) + "/"
	e, err := echo.New(echo.Config{URL: url, Client: opts, Name: o.name, Limit: o.limit, Registerer: reg, Logger: logger.With("component", "echo")})
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
