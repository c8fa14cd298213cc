package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/certs"
	"tandem/internal/firstrun"
	"tandem/internal/server"
	"tandem/internal/turnserver"
	"tandem/protocol"
)

// netOptions are the command line's HTTPS and TURN settings; docs/networks.md explains them.
type netOptions struct {
	dataDir string

	tlsCert, tlsKey string
	selfSigned      bool
	acmeDomains     string
	acmeEmail       string
	acmeCA          string
	httpRedirect    string
	qr              string

	turnAddr          string
	turnAddrExplicit  bool // -turn-addr was given, so failing to listen there is an error
	turnSecret        string
	turnTTL           time.Duration
	turnPublicIP      string
	turnHost          string
	turnRelayPorts    string
	turnExternal      string
	turnAllowPeers    string
	turnAllowLoopback bool
	turnTLSPort       int
	turnTLSExplicit   bool // -turn-tls-port was given, so failing to listen there is an error
	turnShareHTTPS    bool

	turnMaxPerSession  int
	turnMaxPerAddress  int
	turnMaxRelayShare  int
	turnMaxTCP         int
	turnMaxTCPPerAddr  int
	turnTCPIdleTimeout time.Duration
}

// register adds the flags to fs; getenv finds the default data directory.
func (o *netOptions) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(getenv), "directory for the TURN secret, the self-signed certificate and the ACME cache")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS and WSS with this PEM certificate (chain); needs -tls-key")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the PEM private key of -tls-cert")
	fs.BoolVar(&o.selfSigned, "tls-self-signed", false, "LAN mode: serve HTTPS with a self-signed certificate for this machine, kept in -data-dir")
	fs.StringVar(&o.qr, "qr", qrAuto, "with -tls-self-signed, draw the QR code of the LAN https address at start, for a phone's camera: auto (when the output is a terminal), on or off")
	fs.StringVar(&o.acmeDomains, "acme-domain", "", "serve HTTPS with certificates from Let's Encrypt for these domains (comma-separated)")
	fs.StringVar(&o.acmeEmail, "acme-email", "", "contact address given to the ACME certificate authority")
	fs.StringVar(&o.acmeCA, "acme-ca", "", "ACME directory URL of the certificate authority; empty: Let's Encrypt")
	fs.StringVar(&o.httpRedirect, "http-redirect", "", "also listen for plain HTTP on this address (e.g. :80): ACME HTTP-01 challenges, and a redirect to https")
	fs.StringVar(&o.turnAddr, "turn-addr", ":"+strconv.Itoa(turnserver.DefaultPort), `STUN/TURN address, UDP and TCP ("off": no built-in TURN server)`)
	fs.StringVar(&o.turnSecret, "turn-secret", "", "shared secret of TURN credentials, better given as TANDEM_TURN_SECRET; empty: a random one kept in -data-dir")
	fs.DurationVar(&o.turnTTL, "turn-ttl", turnserver.DefaultCredentialTTL, "how long a TURN credential may start new allocations")
	fs.StringVar(&o.turnPublicIP, "turn-public-ip", "", "public IPv4 address of this server, when it is behind a 1:1 NAT (cloud VMs)")
	fs.StringVar(&o.turnHost, "turn-host", "", "host name to put in TURN URLs; empty: -turn-public-ip, or else the host the page was opened by")
	fs.StringVar(&o.turnRelayPorts, "turn-relay-ports", "", "UDP port range of TURN relays, min-max; empty: any free port")
	fs.StringVar(&o.turnExternal, "turn-external", "", "stun:/turn: URLs of an external TURN server sharing -turn-secret, e.g. coturn with use-auth-secret (comma-separated)")
	fs.StringVar(&o.turnAllowPeers, "turn-allow-peers", "", "networks TURN may relay to although they are denied by default, e.g. 10.0.0.0/8 (comma-separated)")
	fs.BoolVar(&o.turnAllowLoopback, "turn-allow-loopback", false, "let TURN relay to loopback addresses: for tests on one machine only")
	fs.IntVar(&o.turnTLSPort, "turn-tls-port", turnserver.DefaultTLSPort, "with HTTPS, also serve TURN over TLS (turns:) with the same certificate on this TCP port (0: not on a port of its own)")
	fs.BoolVar(&o.turnShareHTTPS, "turn-share-https", true, "with HTTPS, also serve TURN over TLS on the HTTPS port (-addr), told apart from web requests, for clients that can reach only that port")
	fs.IntVar(&o.turnMaxPerSession, "turn-max-allocations-per-session", turnserver.DefaultMaxAllocationsPerSession, "TURN allocations one login may hold (-1: no cap)")
	fs.IntVar(&o.turnMaxPerAddress, "turn-max-allocations-per-address", turnserver.DefaultMaxAllocationsPerAddress, "TURN allocations one client IP address may hold (-1: no cap)")
	fs.IntVar(&o.turnMaxRelayShare, "turn-max-relay-share", turnserver.DefaultMaxRelayShare, "percentage of -turn-relay-ports one client IP address may hold")
	fs.IntVar(&o.turnMaxTCP, "turn-max-tcp-conns", turnserver.DefaultMaxTCPConns, "TCP connections to the STUN/TURN port (-1: no cap)")
	fs.IntVar(&o.turnMaxTCPPerAddr, "turn-max-tcp-conns-per-address", turnserver.DefaultMaxTCPConnsPerAddress, "TCP connections to the STUN/TURN port from one client IP address (-1: no cap)")
	fs.DurationVar(&o.turnTCPIdleTimeout, "turn-tcp-idle-timeout", turnserver.DefaultTCPIdleTimeout, "close a TCP connection to the STUN/TURN port that has had no allocation this long")
}

// defaultDataDir is $XDG_CONFIG_HOME/tandem or ~/.config/tandem, or ./tandem-data without a home.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "tandem")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "tandem")
	}
	return "tandem-data"
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// network is HTTPS and TURN as the options set them up.
type network struct {
	opts   *netOptions
	log    *slog.Logger
	tls    *tls.Config // nil: plain HTTP
	acme   *certs.ACME
	self   *certs.SelfSigned
	hosts  certs.Hosts
	turn   *turnserver.Server
	turnOn bool // the built-in or an external TURN server is configured
	turnCf turnserver.Config

	// firstRun is the page plain HTTP gets with a self-signed certificate; urls are the https addresses tandem
	// listens on (start), LAN ones first.
	firstRun *firstrun.Page
	urls     []string

	redirect     *server.HTTPServer
	redirectAddr net.Addr
	redirectDone chan error
}

// newNetwork checks the options and loads what they need from disk (certificates, the TURN secret). It listens on
// nothing yet.
func newNetwork(o *netOptions, logger *slog.Logger) (*network, error) {
	n := &network{opts: o, log: logger}
	modes := 0
	for _, on := range []bool{o.tlsCert != "" || o.tlsKey != "", o.selfSigned, o.acmeDomains != ""} {
		if on {
			modes++
		}
	}
	if modes > 1 {
		return nil, errors.New("use only one of -tls-cert/-tls-key, -tls-self-signed and -acme-domain")
	}
	var err error
	switch {
	case o.tlsCert != "" || o.tlsKey != "":
		if o.tlsCert == "" || o.tlsKey == "" {
			return nil, errors.New("-tls-cert and -tls-key go together")
		}
		if n.tls, err = certs.FromFiles(o.tlsCert, o.tlsKey); err != nil {
			return nil, err
		}
	case o.selfSigned:
		if n.hosts, err = certs.LocalHosts(); err != nil {
			logger.Warn("could not list every address for the certificate", "err", err)
		}
		if n.self, err = certs.LoadOrCreateSelfSigned(filepath.Join(o.dataDir, "tls"), n.hosts, time.Now()); err != nil {
			return nil, err
		}
		if n.self.Created {
			logger.Info("made a self-signed certificate", "file", n.self.CertFile)
		}
		n.tls = n.self.TLSConfig()
		n.firstRun = firstrun.New(n.self.Fingerprint())
	case o.acmeDomains != "":
		n.acme, err = certs.NewACME(certs.ACMEConfig{
			Domains:      splitList(o.acmeDomains),
			CacheDir:     filepath.Join(o.dataDir, "acme"),
			Email:        o.acmeEmail,
			DirectoryURL: o.acmeCA,
		})
		if err != nil {
			return nil, err
		}
		n.tls = n.acme.TLSConfig()
	}
	if o.qr != "" && o.qr != qrAuto && o.qr != qrOn && o.qr != qrOff {
		return nil, fmt.Errorf("-qr %q: want auto, on or off", o.qr)
	}
	if o.httpRedirect != "" && n.tls == nil {
		return nil, errors.New("-http-redirect needs HTTPS: -tls-self-signed, -acme-domain or -tls-cert")
	}

	embedded := o.turnAddr != "off" && o.turnAddr != ""
	external := splitList(o.turnExternal)
	if !embedded && len(external) == 0 {
		return n, nil
	}
	secret := o.turnSecret
	if secret == "" {
		if secret, err = turnserver.LoadOrCreateSecret(filepath.Join(o.dataDir, "turn-secret")); err != nil {
			return nil, err
		}
	}
	cfg := turnserver.Config{
		ListenAddr:    o.turnAddr,
		Secret:        secret,
		CredentialTTL: o.turnTTL,
		Host:          o.turnHost,
		AllowLoopback: o.turnAllowLoopback,
		External:      external,
		ExternalOnly:  !embedded,
		Logger:        logger,

		MaxAllocationsPerSession: o.turnMaxPerSession,
		MaxAllocationsPerAddress: o.turnMaxPerAddress,
		MaxRelayShare:            o.turnMaxRelayShare,
		MaxTCPConns:              o.turnMaxTCP,
		MaxTCPConnsPerAddress:    o.turnMaxTCPPerAddr,
		TCPIdleTimeout:           o.turnTCPIdleTimeout,
	}
	if o.turnMaxRelayShare < 1 || o.turnMaxRelayShare > 100 {
		return nil, fmt.Errorf("-turn-max-relay-share %d: want a percentage from 1 to 100", o.turnMaxRelayShare)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"-turn-max-allocations-per-session", o.turnMaxPerSession}, {"-turn-max-allocations-per-address", o.turnMaxPerAddress},
		{"-turn-max-tcp-conns", o.turnMaxTCP}, {"-turn-max-tcp-conns-per-address", o.turnMaxTCPPerAddr},
	} {
		if f.v == 0 || f.v < -1 {
			return nil, fmt.Errorf("%s %d: want a positive cap, or -1 for none", f.name, f.v)
		}
	}
	if o.turnTCPIdleTimeout <= 0 {
		return nil, fmt.Errorf("-turn-tcp-idle-timeout %v: want a positive duration", o.turnTCPIdleTimeout)
	}
	if !embedded {
		cfg.ListenAddr = ""
	}
	if o.turnTLSPort < 0 || o.turnTLSPort > 65535 {
		return nil, fmt.Errorf("-turn-tls-port %d: want a port, or 0 for none", o.turnTLSPort)
	}
	if embedded && n.tls != nil {
		cfg.TLS = n.tls
		if o.turnTLSPort > 0 {
			cfg.TLSAddr = ":" + strconv.Itoa(o.turnTLSPort)
			cfg.TLSOptional = !o.turnTLSExplicit
		}
	}
	if o.turnPublicIP != "" {
		if cfg.PublicIP, err = netip.ParseAddr(o.turnPublicIP); err != nil {
			return nil, fmt.Errorf("-turn-public-ip: %w", err)
		}
	}
	if o.turnRelayPorts != "" {
		lo, hi, ok := strings.Cut(o.turnRelayPorts, "-")
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := strconv.ParseUint(hi, 10, 16)
		if !ok || err1 != nil || err2 != nil || l == 0 {
			return nil, fmt.Errorf("-turn-relay-ports %q: want min-max, such as 50000-50999", o.turnRelayPorts)
		}
		cfg.RelayMinPort, cfg.RelayMaxPort = uint16(l), uint16(h)
	}
	for _, p := range splitList(o.turnAllowPeers) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("-turn-allow-peers: %w", err)
		}
		cfg.AllowedPeers = append(cfg.AllowedPeers, prefix)
	}
	n.turnCf, n.turnOn = cfg, true
	return n, nil
}

// ownHosts are the names and addresses tandem's page is opened by (server.Config.Hosts, for -allowed-origins): the
// certificate's, the ACME domains, or over plain HTTP the host of addr, or the machine's own names and addresses
// when addr names none.
func (n *network) ownHosts(addr string) []string {
	switch {
	case n.self != nil:
		return n.hosts.Strings()
	case n.acme != nil:
		return splitList(n.opts.acmeDomains)
	case n.tls != nil:
		h, err := certs.CertificateHosts(n.opts.tlsCert)
		if err != nil {
			n.log.Warn("could not read the certificate's names: only -public-url and localhost count as tandem's own origins", "err", err)
		}
		return h.Strings()
	}
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsUnspecified() {
			return []string{host}
		}
	}
	h, err := certs.LocalHosts()
	if err != nil {
		n.log.Debug("could not list every address of this machine", "err", err)
	}
	return h.Strings()
}

// iceServers is the hub's hook: the ICE servers of a user who opened the page at host, with TURN credentials
// bound to the login session.
func (n *network) iceServers(user, host, session string) []protocol.ICEServer {
	if n.turn == nil {
		return nil
	}
	return n.turn.ICEServers(user, host, session)
}

// turnOverTLS is server.Config.TURNOverTLS: nil unless the HTTPS port is shared with TURN over TLS.
func (n *network) turnOverTLS() func(net.Conn) {
	if !n.turnOn || n.turnCf.TLS == nil || !n.opts.turnShareHTTPS {
		return nil
	}
	return func(c net.Conn) {
		if n.turn == nil { // the built-in server could not start
			_ = c.Close()
			return
		}
		n.turn.HandOff(c)
	}
}

// sessionEnded is the hub's hook: the login session is gone, and the TURN credentials minted for it start no
// allocation any more.
func (n *network) sessionEnded(session string) {
	if n.turn != nil {
		n.turn.EndSession(session)
	}
}

// start starts TURN, with its metrics in srv's registry, and the plain-HTTP listener of -http-redirect, with srv's
// HTTP bounds; addr is where HTTPS is served. A built-in TURN server that cannot listen on the default port is
// only a warning.
func (n *network) start(srv *server.Server, addr net.Addr) error {
	var reg prometheus.Registerer = srv.Registry()
	if n.self != nil {
		n.urls = listenURLs(n.hosts, addr, virtualAddrs())
		n.firstRun.SetURLs(n.urls)
	}
	if n.turnOn {
		cfg := n.turnCf
		cfg.Registerer = reg
		if n.turnOverTLS() != nil {
			if tcp, ok := addr.(*net.TCPAddr); ok {
				cfg.SharedTLSPort = tcp.Port
			}
		}
		t, err := turnserver.New(cfg)
		if err != nil {
			return err
		}
		if err := t.Start(); err != nil {
			if n.opts.turnAddrExplicit || len(cfg.External) > 0 {
				return err
			}
			n.log.Warn("no built-in TURN server: calls across NATs may fail", "err", err)
		} else {
			n.turn = t
		}
	}
	if n.acme != nil && n.opts.httpRedirect == "" && !strings.HasSuffix(addr.String(), ":443") {
		n.log.Warn("the certificate authority cannot reach tandem to check the domain: listen on :443 (-addr :443) or answer on port 80 (-http-redirect :80)")
	}
	if n.opts.httpRedirect != "" {
		_, p, _ := net.SplitHostPort(addr.String())
		port, _ := strconv.Atoi(p)
		var h http.Handler = certs.RedirectHandler(port)
		if n.firstRun != nil {
			h = n.firstRun.Handler(srv.Handler(), h)
		}
		if n.acme != nil {
			h = n.acme.HTTPHandler(h)
		}
		ln, err := net.Listen("tcp", n.opts.httpRedirect)
		if err != nil {
			n.close()
			return fmt.Errorf("-http-redirect: %w", err)
		}
		n.redirect = srv.NewHTTPServer(h)
		n.redirectAddr = ln.Addr()
		n.redirectDone = make(chan error, 1)
		go func() { n.redirectDone <- n.redirect.Serve(ln) }()
	}
	return nil
}

// close stops what start started.
func (n *network) close() {
	if n.redirect != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = n.redirect.Shutdown(ctx)
		cancel()
		<-n.redirectDone
		n.redirect = nil
	}
	if n.turn != nil {
		if err := n.turn.Close(); err != nil {
			n.log.Warn("closing the TURN server", "err", err)
		}
	}
}

// port is the port of a listening address.
func port(addr net.Addr) int {
	_, p, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.Atoi(p)
	return n
}

// printURLs tells the person who started tandem what to open; qr draws the QR code of the LAN address too (LAN
// mode only).
func (n *network) printURLs(w io.Writer, addr net.Addr, qr bool) {
	port := port(addr)
	switch {
	case n.self != nil:
		n.printSelfSigned(w, qr)
	case n.acme != nil:
		for _, d := range splitList(n.opts.acmeDomains) {
			fmt.Fprintln(w, "tandem: open "+(certs.Hosts{Names: []string{d}}).URLs(port)[0])
		}
	case n.tls != nil:
		fmt.Fprintf(w, "tandem: open https://%s/ in a browser\n", displayHost(addr))
	default:
		fmt.Fprintf(w, "tandem: open http://%s/ in a browser\n", displayHost(addr))
	}
	switch {
	case n.redirectAddr != nil && n.firstRun != nil:
		fmt.Fprintf(w, "tandem: plain HTTP on %s answers with a page that explains the certificate warning, and otherwise redirects to https\n", n.redirectAddr)
	case n.redirectAddr != nil:
		fmt.Fprintf(w, "tandem: plain HTTP on %s answers ACME challenges and redirects to https\n", n.redirectAddr)
	}
	if n.turn != nil {
		fmt.Fprintf(w, "tandem: STUN/TURN on port %d (UDP and TCP)\n", n.turn.Port())
		if p := n.turn.TLSPort(); p > 0 {
			fmt.Fprintf(w, "tandem: TURN over TLS on port %d\n", p)
		}
		if n.turnOverTLS() != nil {
			fmt.Fprintf(w, "tandem: TURN over TLS on the HTTPS port %d too\n", port)
		}
	}
}
