// Package turnserver is tandem's embedded STUN and TURN server (RFC 8489, RFC 8656), built on pion/turn, and the
// short-lived credentials that let logged-in users, and only them, relay media through it or through an external
// coturn.
//
// Browsers behind symmetric NATs, mobile carriers and corporate firewalls often cannot reach each other directly;
// a TURN server relays their media. A Server listens on UDP and TCP on one port (3478 by default), on IPv4 and
// IPv6, and with a certificate also over TLS, on a port of its own and on the HTTPS port (tls.go). Clients get
// their ICE servers from ICEServers, called for each login: a STUN URL, and TURN URLs with a credential in the
// TURN REST API scheme (username "<expiry>:<session tag>:<user>", password base64(HMAC-SHA1(secret, username))),
// valid for a few hours. Expired, malformed and forged credentials are refused.
//
// # Bounded
//
// Everything a client can make the server hold has a bound (docs/limits.md): allocations per login session, per
// client address and per share of the relay port range; a login's credentials start no allocation once the login
// is gone (EndSession); permissions and channels per allocation; TCP connections in all, per client address, and
// for how long one may stay without an allocation.
//
// # Relaying
//
// Media a client sends on a channel binding, and a bound peer's datagrams, are relayed by tandem itself as they
// are read, without pion's per-packet allocations and goroutine handoffs (channels.go). On Linux the UDP port
// (several sockets bound with SO_REUSEPORT) and the relay sockets of UDP clients are served by event loops of
// tandem's own, one per listening socket, with recvmmsg and sendmmsg (loop_linux.go), and so are plain TCP
// connections and their clients' relay sockets, with non-blocking reads and writes (tcploop_linux.go): no
// goroutine is woken for a packet. pion keeps everything else, and reads what the loops hand it.
//
// # Not an open relay
//
// A TURN server sends UDP wherever its clients ask. Left open, it lets anyone who can log in reach what the server
// itself can reach: the operator's LAN, a cloud's metadata service (169.254.169.254), services listening on
// loopback. So by default relays refuse (in CreatePermission, ChannelBind, and again on every send) any peer that
// is not a globally routed unicast address: loopback, private (RFC 1918, ULA), carrier-grade NAT, link-local,
// multicast, unspecified and documentation ranges. The one exception is the relay addresses of this server's own
// live allocations, so that two clients on the same LAN can still talk relay to relay. Operators allow more with
// Config.AllowedPeers, and tests on one machine with Config.AllowLoopback.
package turnserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"

	"tandem/internal/netaddr"
	"tandem/protocol"
)

// Server is an embedded STUN and TURN server. Create it with New, then Start it; Close stops it. Its methods are
// safe for concurrent use.
type Server struct {
	cfg        Config
	listenHost netip.Addr
	listenPort int
	creds      *Credentials
	filter     peerFilter
	metrics    *metrics
	now        func() time.Time

	addrCap int // allocations one client address may hold; negative: no cap

	mu        sync.Mutex // guards what follows
	turn      *turn.Server
	tcp       []*trackedListener                // TCP, TLS and handed-off connections
	udpConns  map[netip.AddrPort][]*net.UDPConn // the UDP listening sockets, by listening address (without loops)
	udpSocks  map[netip.AddrPort][]*udpSocket   // the UDP listening sockets, by listening address (with loops)
	loops     []*dataLoop                       // the data plane's event loops (loop_linux.go); nil: none
	handoffs  []handoff                         // where HandOff puts connections, by listening address
	port      int                               // the port listened on, once started
	tlsPort   int                               // the TLS port listened on, once started; negative: none
	listens   []netip.Addr                      // the addresses listened on, once started
	hosts     []string                          // URL hosts to use when the client's host is unusable
	started   bool
	closed    bool
	closeErrs error

	// channelPath is set when tandem relays channel data itself (channels.go); tests clear it to compare with
	// pion's own path.
	channelPath bool
	// channelLifetime is the lifetime of a channel binding; zero means pion's (10 minutes). Tests shorten it.
	channelLifetime time.Duration
	cmu             sync.RWMutex             // guards udpClients, and the linking of relays to their clients
	udpClients      map[udpClient]*relayConn // the relays of UDP allocations, by their clients

	amu                  sync.Mutex // guards the allocation bookkeeping below (quota.go)
	relays               map[netip.AddrPort]*relayConn
	closedChannelPackets uint64 // what the closed relays relayed on the channel data path
	relayIPs             map[netip.Addr]int
	sessions             map[string]*session // by session tag
	sweepAt              int                 // the size of sessions at which expired ones are swept
	perAddr              map[netip.Addr]int  // allocations made or under way, by client IP address
	allocs               map[allocKey]allocation
	pending              map[clientKey][]reservation
	live                 map[string]int // allocations by client transport address and username
	buckets              map[clientKey]*permissionBucket

	tcpLimits tcpLimits
}

// New validates cfg and returns a Server that is not yet listening. It registers the metrics with
// cfg.Registerer and starts nothing.
func New(cfg Config) (*Server, error) {
	host, port, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	creds, err := NewCredentials(cfg.Secret, cfg.CredentialTTL)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		listenHost:  host,
		listenPort:  port,
		creds:       creds,
		filter:      newPeerFilter(&cfg),
		metrics:     newMetrics(),
		now:         time.Now,
		relays:      make(map[netip.AddrPort]*relayConn),
		udpConns:    make(map[netip.AddrPort][]*net.UDPConn),
		udpSocks:    make(map[netip.AddrPort][]*udpSocket),
		udpClients:  make(map[udpClient]*relayConn),
		channelPath: true,
		tlsPort:     -1,
		relayIPs:    make(map[netip.Addr]int),
		sessions:    make(map[string]*session),
		sweepAt:     minSessionSweep,
		perAddr:     make(map[netip.Addr]int),
		allocs:      make(map[allocKey]allocation),
		pending:     make(map[clientKey][]reservation),
		live:        make(map[string]int),
		buckets:     make(map[clientKey]*permissionBucket),
	}
	s.addrCap = s.addressCap()
	s.tcpLimits = newTCPLimits(cfg.MaxTCPConns, cfg.MaxTCPConnsPerAddress)
	s.creds.now = func() time.Time { return s.now() }
	if err := s.metrics.register(cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// Credentials returns the server's credential minter.
func (s *Server) Credentials() *Credentials { return s.creds }

// endpoint is one listening address with the addresses of its relays.
type endpoint struct {
	listen, bind, advertised netip.Addr
	optional                 bool // an IPv6 address of the machine: failing to listen there is only a warning
}

func (s *Server) endpoints() ([]endpoint, error) {
	c := &s.cfg
	if h := s.listenHost; !h.IsUnspecified() {
		e := endpoint{listen: h, bind: h, advertised: h}
		if c.RelayAddress.IsValid() {
			e.bind, e.advertised = c.RelayAddress, c.RelayAddress
		}
		if c.PublicIP.IsValid() {
			e.advertised = c.PublicIP
		}
		return []endpoint{e}, nil
	}
	var eps []endpoint
	if c.RelayAddress.IsValid() || c.PublicIP.IsValid() {
		any4 := netip.IPv4Unspecified()
		e := endpoint{listen: any4, bind: any4, advertised: c.RelayAddress}
		if c.RelayAddress.IsValid() {
			e.bind = c.RelayAddress
		}
		if c.PublicIP.IsValid() {
			e.advertised = c.PublicIP
		}
		eps = append(eps, e)
	}
	all, err := netaddr.Local()
	if err != nil {
		if len(eps) > 0 {
			s.cfg.Logger.Warn("TURN: cannot list this machine's addresses: IPv4 only", "err", err)
			return eps, nil
		}
		return nil, fmt.Errorf("turnserver: %w", err)
	}
	if len(eps) == 0 {
		for _, ip := range all {
			if ip.Is4() {
				eps = append(eps, endpoint{listen: ip, bind: ip, advertised: ip})
			}
		}
	}
	if s.listenHost.Is6() { // "" or "::": IPv6 too
		for _, ip := range all {
			if ip.Is6() {
				eps = append(eps, endpoint{listen: ip, bind: ip, advertised: ip, optional: true})
			}
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("turnserver: no IP address to listen on")
	}
	return eps, nil
}

// listening is what Start opened on one endpoint.
type listening struct {
	udp   []*net.UDPConn // without loops
	socks []*udpSocket   // with loops
	tcp   net.Listener
	tls   net.Listener // nil without a TLS port
}

func (l *listening) close() {
	for _, c := range l.udp {
		_ = c.Close()
	}
	for _, c := range l.socks {
		_ = c.close()
	}
	for _, c := range []net.Listener{l.tcp, l.tls} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// Start opens the UDP, TCP and TLS listeners and starts serving. It fails if a port is taken.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.ExternalOnly {
		return nil
	}
	if s.started || s.closed {
		return errors.New("turnserver: Start called twice, or after Close")
	}
	eps, err := s.endpoints()
	if err != nil {
		return err
	}
	var (
		pconfs  []turn.PacketConnConfig
		lconfs  []turn.ListenerConfig
		opened  []*listening
		served  []endpoint
		port    = s.listenPort
		tlsPort = s.cfg.tlsPort()
	)
	loops, err := startDataLoops(s, s.cfg.UDPSockets)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		for _, l := range opened {
			l.close()
		}
		stopDataLoops(loops)
		s.tcp, s.handoffs = nil, nil
		clear(s.udpConns)
		clear(s.udpSocks)
		return err
	}
	var tlsCfg *tls.Config
	if s.cfg.TLS != nil {
		tlsCfg = s.cfg.TLS.Clone()
		tlsCfg.NextProtos = []string{ALPNProtocol}
	}
	for _, e := range eps {
		raw := loops != nil
		l, p, tp, err := listenEndpoint(e.listen, port, tlsPort, s.cfg.UDPSockets, raw)
		if err != nil && tlsPort >= 0 && s.cfg.TLSOptional && errors.Is(err, errTLSListen) {
			s.cfg.Logger.Warn("TURN over TLS: cannot listen on its port; going on without it", "err", err)
			tlsPort = -1
			l, p, tp, err = listenEndpoint(e.listen, port, tlsPort, s.cfg.UDPSockets, raw)
		}
		if err != nil {
			if e.optional {
				s.cfg.Logger.Warn("TURN: not listening on an IPv6 address of this machine", "address", e.listen, "err", err)
				continue
			}
			return fail(err)
		}
		port, tlsPort = p, tp
		opened = append(opened, l)
		served = append(served, e)
		// The relays of UDP and plain TCP clients are served by the loops, those of TLS clients by pion's
		// goroutines; they count the port range's sockets together.
		open := new(atomic.Int64)
		gen := &relayGenerator{s: s, bind: e.bind, advertised: e.advertised, open: open}
		udpGen := &relayGenerator{s: s, bind: e.bind, advertised: e.advertised, open: open, loops: loops}
		if raw {
			ap := l.socks[0].local
			s.udpSocks[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = l.socks
			for i, sock := range l.socks {
				pc, err := newLoopPacketConn(s, sock, loops[i%len(loops)])
				if err != nil {
					opened = append(opened, l)
					return fail(err)
				}
				pconfs = append(pconfs, turn.PacketConnConfig{
					PacketConn: pc, RelayAddressGenerator: udpGen, PermissionHandler: udpGen.permit,
				})
			}
		} else {
			ap := l.udp[0].LocalAddr().(*net.UDPAddr).AddrPort()
			s.udpConns[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = l.udp
			for _, pc := range l.udp {
				pconfs = append(pconfs, turn.PacketConnConfig{
					PacketConn: newPacketConn(s, pc), RelayAddressGenerator: gen, PermissionHandler: gen.permit,
				})
			}
		}
		// Plain TCP clients' relays are served by the loops too, which write their ChannelData to the connections
		// without blocking (tcploop_linux.go); TLS clients' by pion's goroutines.
		plain := s.newTrackedListener(l.tcp, nil)
		plain.loops = loops
		tcpGen := &relayGenerator{s: s, bind: e.bind, advertised: e.advertised, open: open, loops: loops}
		listeners := []*trackedListener{plain}
		if l.tls != nil {
			listeners = append(listeners, s.newTrackedListener(l.tls, tlsCfg))
		}
		if tlsCfg != nil {
			h := newHandoffListener(e.listen, port)
			s.handoffs = append(s.handoffs, handoff{listen: e.listen, l: h})
			listeners = append(listeners, s.newTrackedListener(h, nil))
		}
		for _, tl := range listeners {
			s.tcp = append(s.tcp, tl)
			g := gen
			if tl == plain {
				g = tcpGen
			}
			lconfs = append(lconfs, turn.ListenerConfig{Listener: tl, RelayAddressGenerator: g, PermissionHandler: g.permit})
		}
	}
	if len(served) == 0 {
		return fail(errors.New("turnserver: could not listen on any address"))
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs:  pconfs,
		ListenerConfigs:    lconfs,
		LoggerFactory:      pionLogs{s.cfg.Logger.With("component", "turn")},
		Realm:              s.cfg.Realm,
		ChannelBindTimeout: s.channelLifetime,
		AuthHandler:        s.authenticate,
		QuotaHandler:       s.quota,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnAllocationError:   s.onAllocationError,
			OnChannelCreated:    s.onChannelCreated,
			OnChannelDeleted:    s.onChannelDeleted,
			OnPermissionCreated: s.onPermissionCreated,
			OnPermissionDeleted: s.onPermissionDeleted,
		},
	})
	if err != nil {
		return fail(fmt.Errorf("turnserver: %w", err))
	}
	s.turn, s.port, s.tlsPort, s.started, s.loops = srv, port, tlsPort, true, loops
	s.hosts = s.fallbackHosts(served)
	for _, e := range served {
		s.listens = append(s.listens, e.listen)
	}
	s.cfg.Logger.Info("TURN server listening", "port", port, "tls_port", max(tlsPort, 0), "addresses", len(served), "realm", s.cfg.Realm)
	return nil
}

// errTLSListen marks a failure to listen on the TLS port.
var errTLSListen = errors.New("turnserver: cannot listen for TURN over TLS")

// listenEndpoint listens on UDP (with udpSockets sockets sharing the port) and TCP on ip:port, and on TCP on
// ip:tlsPort unless tlsPort is negative; port 0 picks a free one for UDP and TCP both, and tlsPort 0 another.
// With raw, the UDP sockets are raw descriptors for the loops.
func listenEndpoint(ip netip.Addr, port, tlsPort, udpSockets int, raw bool) (*listening, int, int, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var (
		l       = &listening{}
		lastErr error
	)
	for range tries {
		var (
			pcs   []*net.UDPConn
			socks []*udpSocket
			p     int
			err   error
		)
		if raw {
			socks, err = listenRawUDP(ip, port, udpSockets)
			if err != nil {
				return nil, 0, 0, err
			}
			p = int(socks[0].local.Port())
		} else {
			pcs, err = listenUDP(ip, port, udpSockets)
			if err != nil {
				return nil, 0, 0, err
			}
			p = pcs[0].LocalAddr().(*net.UDPAddr).Port
		}
		tl, err := net.ListenTCP(tcpNetwork(ip), net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))))
		if err == nil {
			l.udp, l.socks, l.tcp, port = pcs, socks, tl, p
			break
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		for _, sock := range socks {
			_ = sock.close()
		}
		lastErr = fmt.Errorf("turnserver: listening on TCP %v: %w", netip.AddrPortFrom(ip, uint16(p)), err)
	}
	if l.tcp == nil {
		return nil, 0, 0, lastErr
	}
	if tlsPort >= 0 {
		at := netip.AddrPortFrom(ip, uint16(tlsPort))
		tl, err := net.ListenTCP(tcpNetwork(ip), net.TCPAddrFromAddrPort(at))
		if err != nil {
			l.close()
			return nil, 0, 0, fmt.Errorf("%w: TCP %v: %w", errTLSListen, at, err)
		}
		l.tls, tlsPort = tl, tl.Addr().(*net.TCPAddr).Port
	}
	return l, port, tlsPort, nil
}

// tcpNetwork and udpNetwork are the networks of sockets bound to ip.
func tcpNetwork(ip netip.Addr) string {
	if ip.Is4() {
		return "tcp4"
	}
	return "tcp6"
}

func udpNetwork(ip netip.Addr) string {
	if ip.Is4() {
		return "udp4"
	}
	return "udp6"
}

func (s *Server) fallbackHosts(eps []endpoint) []string {
	if s.cfg.Host != "" {
		return []string{s.cfg.Host}
	}
	if s.cfg.PublicIP.IsValid() {
		return []string{s.cfg.PublicIP.String()}
	}
	var hosts, loop []string
	for _, e := range eps {
		switch {
		case e.advertised.IsLoopback():
			loop = append(loop, e.advertised.String())
		case e.advertised.IsValid() && !e.advertised.IsUnspecified():
			hosts = append(hosts, e.advertised.String())
		}
	}
	if len(hosts) == 0 {
		return loop
	}
	return hosts
}

// Port returns the port the server listens on, 0 before Start.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// TLSPort returns the port the server serves TURN over TLS on (Config.TLSAddr), 0 before Start or without one.
func (s *Server) TLSPort() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.tlsPort, 0)
}

// Close stops the server: it closes the listeners, every TCP connection and every allocation. Close before Start,
// and a second Close, do nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.started {
		s.closed = true
		return s.closeErrs
	}
	s.closed = true
	var errs []error
	if err := s.turn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("turnserver: closing: %w", err))
	}
	stopDataLoops(s.loops)
	for _, l := range s.tcp {
		l.closeConns()
	}
	s.closeErrs = errors.Join(errs...)
	return s.closeErrs
}

// ICEServers returns the ICE servers for a client of the user who reached the web page at host (a host name or IP
// address, with or without a port, as in an HTTP Host header): the embedded server's STUN URL, its TURN URLs over
// UDP and TCP with a fresh credential (and over TLS, with Config.TLS: on Config.SharedTLSPort when set, otherwise
// on the server's TLS port), and the External URLs with the same credential. The embedded server's URLs name
// Config.Host or Config.PublicIP when set, otherwise host; the turns: URL names Config.Host when set, otherwise
// host, for that is the name its certificate was checked against. Before Start they are left out.
//
// The credential is bound to session, the id of the user's login: the login's allocations are held to
// Config.MaxAllocationsPerSession, and once EndSession(session) is called the credential starts no allocation.
// An empty session stands for a login of its own that never ends (until the credential expires).
func (s *Server) ICEServers(user, host, session string) []protocol.ICEServer {
	tag := NewTag()
	if session != "" {
		tag = s.creds.SessionTag(session)
	}
	username, password := s.creds.Mint(tag, user)
	if !s.cfg.ExternalOnly {
		s.registerSession(tag, s.now().Add(s.creds.TTL()), s.cfg.ServiceUser != "" && user == s.cfg.ServiceUser)
	}
	var out []protocol.ICEServer
	s.mu.Lock()
	port, tlsPort, hosts, listens, running := s.port, s.tlsPort, s.hosts, s.listens, s.started && !s.closed
	s.mu.Unlock()
	if s.cfg.SharedTLSPort > 0 {
		tlsPort = s.cfg.SharedTLSPort
	}
	if running {
		pageHost, pageOK := urlHost(host, listens)
		tlsHosts := hosts
		if s.cfg.Host == "" && pageOK {
			tlsHosts = []string{pageHost}
		}
		if s.cfg.Host == "" && !s.cfg.PublicIP.IsValid() && pageOK {
			hosts = []string{pageHost}
		}
		var stuns, turns []string
		for _, h := range hosts {
			hp := net.JoinHostPort(h, strconv.Itoa(port))
			stuns = append(stuns, "stun:"+hp)
			turns = append(turns, "turn:"+hp+"?transport=udp", "turn:"+hp+"?transport=tcp")
		}
		if tlsPort > 0 && s.cfg.TLS != nil {
			for _, h := range tlsHosts {
				turns = append(turns, "turns:"+net.JoinHostPort(h, strconv.Itoa(tlsPort))+"?transport=tcp")
			}
		}
		if len(hosts) > 0 {
			out = append(out,
				protocol.ICEServer{URLs: stuns},
				protocol.ICEServer{URLs: turns, Username: username, Credential: password})
		}
	}
	if len(s.cfg.External) > 0 {
		out = append(out, protocol.ICEServer{
			URLs: append([]string(nil), s.cfg.External...), Username: username, Credential: password,
		})
	}
	return out
}

// urlHost turns the host a client reached the web page by into a host for stun: and turn: URLs, given the
// addresses the server listens on. It reports false when the host is unusable: empty, malformed, or an IPv6
// address the server does not listen on.
func urlHost(host string, listens []netip.Addr) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		// Browsers may resolve localhost to ::1, where the server may not listen.
		return "127.0.0.1", true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch ip = ip.Unmap(); {
		case ip.Zone() != "":
			return "", false
		case ip.Is4():
			return ip.String(), true
		case slices.Contains(listens, ip):
			return ip.String(), true
		case ip.IsLoopback():
			return "127.0.0.1", true
		default:
			return "", false
		}
	}
	return host, validHost(host)
}

// authenticate is pion's AuthHandler: it returns the long-term key for a valid credential.
// A credential whose login has ended, or that has expired, is still good for the requests of the allocations it
// made (refreshes, permissions, channels), so that a call goes on; quota refuses it new allocations.
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	password, tag, err := s.creds.check(username)
	if err == nil {
		s.amu.Lock()
		usable := s.sessionUsableLocked(tag)
		s.amu.Unlock()
		if !usable {
			err = errSessionEnded
		}
	}
	switch {
	case err == nil:
	case (errors.Is(err, errExpired) || errors.Is(err, errSessionEnded)) && s.liveAllocation(src, username):
		password = s.creds.password(username)
	default:
		reason := authMalformed
		switch {
		case errors.Is(err, errExpired):
			reason = authExpired
		case errors.Is(err, errSessionEnded):
			reason = authEnded
		}
		s.metrics.authFailures.WithLabelValues(reason).Inc()
		s.cfg.Logger.Debug("TURN credential refused", "client", src, "username", username, "err", err)
		return nil, false
	}
	return turn.GenerateAuthKey(username, realm, password), true
}

var errSessionEnded = errors.New("turnserver: the credential's login has ended")

// onAuth counts the requests whose message integrity did not match the credential's password.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	if !verdict {
		s.metrics.authFailures.WithLabelValues(authIntegrity).Inc()
		s.cfg.Logger.Debug("TURN request with a bad signature", "client", src, "username", username, "method", method)
	}
}

// permit is pion's PermissionHandler (through relayGenerator.permit), for each peer of a CreatePermission and for
// each ChannelBind (new or refreshed): the peer must be allowed, of the relay's address family (IPv4 when relay4;
// RFC 8656 answers a mismatch with 443 Peer Address Family Mismatch, pion with 403), and the client's allocation
// must have a token left in its bucket.
func (s *Server) permit(client net.Addr, peer net.IP, relay4 bool) bool {
	ip, ok := netip.AddrFromSlice(peer)
	ip = ip.Unmap()
	allowed := ok && s.filter.allows(ip)
	if !allowed {
		s.amu.Lock()
		allowed = s.relayIPs[ip] > 0
		s.amu.Unlock()
	}
	if !allowed {
		s.metrics.deniedPeers.Inc()
		s.cfg.Logger.Debug("TURN peer denied", "client", client, "peer", peer)
		return false
	}
	if ip.Is4() != relay4 {
		s.cfg.Logger.Debug("TURN peer of the other address family than its relay's", "client", client, "peer", peer)
		return false
	}
	if !s.takePermissionToken(client) {
		s.limited(limitPermissions, client, "")
		return false
	}
	return true
}

// mayRelayTo reports whether a relay may send to peer: an allowed address, or a live relay of this server.
func (s *Server) mayRelayTo(peer netip.AddrPort) bool {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if s.filter.allows(peer.Addr()) {
		return true
	}
	s.amu.Lock()
	defer s.amu.Unlock()
	_, own := s.relays[peer]
	return own
}

func (s *Server) addRelay(a netip.AddrPort, rc *relayConn) {
	s.amu.Lock()
	s.relays[a] = rc
	s.relayIPs[a.Addr()]++
	s.amu.Unlock()
	s.metrics.allocations.Inc()
}

func (s *Server) removeRelay(a netip.AddrPort) {
	s.amu.Lock()
	if rc := s.relays[a]; rc != nil {
		s.closedChannelPackets += rc.channelPackets.Load()
	}
	delete(s.relays, a)
	if s.relayIPs[a.Addr()]--; s.relayIPs[a.Addr()] <= 0 {
		delete(s.relayIPs, a.Addr())
	}
	s.amu.Unlock()
	s.metrics.allocations.Dec()
}
