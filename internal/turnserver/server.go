// Package turnserver is tandem's embedded STUN and TURN server (RFC 8489, RFC 8656), built on pion/turn, and the
// short-lived credentials that let logged-in users, and only them, relay media through it or through an external
// coturn.
//
// Browsers behind symmetric NATs, mobile carriers and corporate firewalls often cannot reach each other directly;
// a TURN server relays their media. A Server listens on UDP and TCP on one port (3478 by default). Clients get
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
// are read, without pion's per-packet allocations and goroutine handoffs (channels.go); the UDP port is served by
// several sockets bound with SO_REUSEPORT, read in parallel. pion keeps everything else.
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
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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
	tcp       []*trackedListener
	udpConns  map[netip.AddrPort][]*net.UDPConn // the UDP listening sockets, by listening address
	port      int                               // the port listened on, once started
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
		udpClients:  make(map[udpClient]*relayConn),
		channelPath: true,
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
}

func (s *Server) endpoints() ([]endpoint, error) {
	c := &s.cfg
	if !s.listenHost.IsUnspecified() {
		e := endpoint{listen: s.listenHost, bind: s.listenHost, advertised: s.listenHost}
		if c.RelayAddress.IsValid() {
			e.bind, e.advertised = c.RelayAddress, c.RelayAddress
		}
		if c.PublicIP.IsValid() {
			e.advertised = c.PublicIP
		}
		return []endpoint{e}, nil
	}
	if c.RelayAddress.IsValid() || c.PublicIP.IsValid() {
		e := endpoint{listen: s.listenHost, bind: s.listenHost, advertised: c.RelayAddress}
		if c.RelayAddress.IsValid() {
			e.bind = c.RelayAddress
		}
		if c.PublicIP.IsValid() {
			e.advertised = c.PublicIP
		}
		return []endpoint{e}, nil
	}
	ips, err := interfaceIPv4s()
	if err != nil {
		return nil, err
	}
	eps := make([]endpoint, len(ips))
	for i, ip := range ips {
		eps[i] = endpoint{listen: ip, bind: ip, advertised: ip}
	}
	return eps, nil
}

// interfaceIPv4s lists the IPv4 addresses of the interfaces that are up, link-local ones left out.
func interfaceIPv4s() ([]netip.Addr, error) {
	all, err := netaddr.Local()
	if err != nil {
		return nil, fmt.Errorf("turnserver: %w", err)
	}
	var ips []netip.Addr
	for _, ip := range all {
		if ip.Is4() {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		return nil, errors.New("turnserver: no IPv4 address to listen on")
	}
	return ips, nil
}

// Start opens the UDP and TCP listeners and starts serving. It fails if the port is taken.
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
		pconfs []turn.PacketConnConfig
		lconfs []turn.ListenerConfig
		opened []interface{ Close() error }
		port   = s.listenPort
	)
	fail := func(err error) error {
		for _, c := range opened {
			_ = c.Close()
		}
		s.tcp = nil
		return err
	}
	for _, e := range eps {
		pcs, l, p, err := listenPair(e.listen, port, s.cfg.UDPSockets)
		if err != nil {
			return fail(err)
		}
		port = p
		tl := s.newTrackedListener(l)
		for _, pc := range pcs {
			opened = append(opened, pc)
		}
		if len(pcs) > 0 {
			ap := pcs[0].LocalAddr().(*net.UDPAddr).AddrPort()
			s.udpConns[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = pcs
		}
		opened = append(opened, tl)
		s.tcp = append(s.tcp, tl)
		gen := &relayGenerator{s: s, bind: e.bind, advertised: e.advertised}
		for _, pc := range pcs {
			pconfs = append(pconfs, turn.PacketConnConfig{
				PacketConn: newPacketConn(s, pc), RelayAddressGenerator: gen, PermissionHandler: s.permit,
			})
		}
		lconfs = append(lconfs, turn.ListenerConfig{
			Listener: tl, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
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
	s.turn, s.port, s.started = srv, port, true
	s.hosts = s.fallbackHosts(eps)
	s.cfg.Logger.Info("TURN server listening", "port", port, "addresses", len(eps), "realm", s.cfg.Realm)
	return nil
}

// listenPair listens on UDP (with udpSockets sockets sharing the port) and TCP on ip:port; port 0 picks one free
// for both.
func listenPair(ip netip.Addr, port, udpSockets int) ([]*net.UDPConn, net.Listener, int, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var lastErr error
	for range tries {
		pcs, err := listenUDP(ip, port, udpSockets)
		if err != nil {
			return nil, nil, 0, err
		}
		p := pcs[0].LocalAddr().(*net.UDPAddr).Port
		l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))))
		if err == nil {
			return pcs, l, p, nil
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		lastErr = fmt.Errorf("turnserver: listening on TCP %v: %w", netip.AddrPortFrom(ip, uint16(p)), err)
	}
	return nil, nil, 0, lastErr
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
	for _, l := range s.tcp {
		l.closeConns()
	}
	s.closeErrs = errors.Join(errs...)
	return s.closeErrs
}

// ICEServers returns the ICE servers for a client of the user who reached the web page at host (a host name or IP
// address, with or without a port, as in an HTTP Host header): the embedded server's STUN URL, its TURN URLs over
// UDP and TCP with a fresh credential, and the External URLs with the same credential. The embedded server's URLs
// name Config.Host or Config.PublicIP when set, otherwise host; before Start they are left out.
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
	port, hosts, running := s.port, s.hosts, s.started && !s.closed
	s.mu.Unlock()
	if running {
		if s.cfg.Host == "" && !s.cfg.PublicIP.IsValid() {
			if h, ok := urlHost(host); ok {
				hosts = []string{h}
			}
		}
		var stuns, turns []string
		for _, h := range hosts {
			hp := net.JoinHostPort(h, strconv.Itoa(port))
			stuns = append(stuns, "stun:"+hp)
			turns = append(turns, "turn:"+hp+"?transport=udp", "turn:"+hp+"?transport=tcp")
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

// urlHost turns the host a client reached the web page by into a host for stun: and turn: URLs. It reports false
// when the host is unusable: empty, malformed, or an IPv6 address (relays and listeners are IPv4).
func urlHost(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		// Browsers may resolve localhost to ::1, where the server does not listen.
		return "127.0.0.1", true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch {
		case ip.Unmap().Is4():
			return ip.Unmap().String(), true
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

// permit is pion's PermissionHandler, for each peer of a CreatePermission and for each ChannelBind (new or
// refreshed): the peer must be allowed, and the client's allocation must have a token left in its bucket.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
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
