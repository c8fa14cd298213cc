// Command tandem-echo runs tandem's echo test call as a program of its own, against any tandem server: it logs in
// as "echo" (or -name), answers every call, sends each caller's own audio and video back, echoes chat, and hangs
// up after -limit. The tandem server runs the same echo peer inside itself by default; this command is for a
// server run with -echo=false, one on another machine, or a second echo user. See docs/echo.md.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tandem/client"
	"tandem/internal/cli"
	"tandem/internal/echo"
	"tandem/internal/netaddr"
)

func main() {
	cli.Main("tandem-echo", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil) })
}

type options struct {
	server        string
	name          string
	token         string
	limit         time.Duration
	maxCalls      int
	allowLoopback bool
	allowPeers    string
	insecure      bool
	ca            string
	metrics       string
	logFormat     string
	logLevel      string
}

// run is tandem-echo: it parses args (each flag may also come from a TANDEM_* environment variable) and runs the
// echo peer until ctx is done. ready, if not nil, is called with the metrics listener's address (or nil) once
// the echo peer is set up, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(metrics net.Addr)) error {
	var o options
	fs := flag.NewFlagSet("tandem-echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.server, "server", "ws://localhost:9090/", "the tandem server's WebSocket URL (ws:// or wss://)")
	fs.StringVar(&o.name, "name", "echo", "the name to log in as")
	fs.StringVar(&o.token, "token", "", "the server's reservation token for -name, better given as TANDEM_TOKEN; empty: log in like any user")
	fs.DurationVar(&o.limit, "limit", 2*time.Minute, "hang up a call after this long")
	fs.IntVar(&o.maxCalls, "max-calls", echo.DefaultMaxCalls, "calls at once; more callers are refused")
	fs.BoolVar(&o.allowLoopback, "allow-loopback", false, "send to callers' loopback addresses (a server and callers on this machine only)")
	fs.StringVar(&o.allowPeers, "allow-peers", "", "networks of callers' addresses to send to although they are refused by default, e.g. 10.0.0.0/8 (comma-separated)")
	fs.BoolVar(&o.insecure, "insecure", false, "accept any TLS certificate from a wss:// server (a self-signed one, for a test)")
	fs.StringVar(&o.ca, "ca", "", "a PEM file of certificates to trust for a wss:// server, beside the system's")
	fs.StringVar(&o.metrics, "metrics", "", "serve /metrics on this address, e.g. 127.0.0.1:9091 (empty: off)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	intro := "tandem-echo is tandem's echo test call as a program of its own: it logs in to a tandem server and\nsends every caller's own audio and video back."
	if err := cli.Parse(fs, "TANDEM_", intro, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	logger, err := cli.NewLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	copts, err := clientOptions(o)
	if err != nil {
		return err
	}

	if o.maxCalls <= 0 {
		return fmt.Errorf("-max-calls %d: must be at least 1", o.maxCalls)
	}
	var allowed []netip.Prefix
	for _, p := range strings.Split(o.allowPeers, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("-allow-peers: %w", err)
		}
		allowed = append(allowed, prefix)
	}

	reg := prometheus.NewRegistry()
	e, err := echo.New(echo.Config{URL: o.server, Client: copts, Name: o.name, Token: o.token, Limit: o.limit, MaxCalls: o.maxCalls,
		Peers: netaddr.NewPeerPolicy(o.allowLoopback, allowed, nil), Registerer: reg, Logger: logger})
	if err != nil {
		return err
	}

	var metricsAddr net.Addr
	if o.metrics != "" {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		ln, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return err
		}
		metricsAddr = ln.Addr()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		defer hs.Close()
		logger.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	if ready != nil {
		ready(metricsAddr)
	}
	logger.Info("tandem-echo starting", "server", o.server, "name", o.name, "limit", o.limit)
	return e.Run(ctx)
}

// clientOptions makes the connection's TLS settings from -insecure and -ca.
func clientOptions(o options) (*client.Options, error) {
	if !o.insecure && o.ca == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.insecure {
		tc.InsecureSkipVerify = true
	}
	if o.ca != "" {
		pem, err := os.ReadFile(o.ca)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca: no certificate in %s", o.ca)
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &client.Options{HTTPClient: &http.Client{Transport: tr}}, nil
}
