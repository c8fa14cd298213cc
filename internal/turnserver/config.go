package turnserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPort is the TURN port registered with IANA, used when Config.ListenAddr names none.
const DefaultPort = 3478

// DefaultTLSPort is the port registered with IANA for TURN over TLS (turns:, RFC 7065).
const DefaultTLSPort = 5349

// Defaults of the Config fields that bound what clients can make the server hold (docs/limits.md).
const (
	// DefaultMaxAllocationsPerSession is Config.MaxAllocationsPerSession when zero. A browser makes one allocation
	// per TURN URL (three: UDP, TCP and TLS) and network interface for each peer connection, and a user may be in a
	// call and an echo test call at once: 3 URLs x 2 interfaces x 2 calls is 12, doubled for an ICE restart.
	DefaultMaxAllocationsPerSession = 24
	// DefaultMaxAllocationsPerAddress is Config.MaxAllocationsPerAddress when zero: eight logins' worth, for the
	// users behind one NAT (an office, a carrier-grade NAT).
	DefaultMaxAllocationsPerAddress = 192
	// DefaultMaxRelayShare is Config.MaxRelayShare when zero: the percentage of a relay port range one client
	// address may hold.
	DefaultMaxRelayShare = 25
	// DefaultMaxTCPConns is Config.MaxTCPConns when zero.
	DefaultMaxTCPConns = 4096
	// DefaultMaxTCPConnsPerAddress is Config.MaxTCPConnsPerAddress when zero: each holds at most one allocation.
	DefaultMaxTCPConnsPerAddress = 64
	// DefaultTCPIdleTimeout is Config.TCPIdleTimeout when zero. A client allocates within a few round trips of
	// connecting.
	DefaultTCPIdleTimeout = 15 * time.Second
)

// maxUDPSockets bounds Config.UDPSockets.
const maxUDPSockets = 16

// Config configures a Server. The zero value of every field is usable except Secret.
type Config struct {
	// ListenAddr is the host:port to serve STUN and TURN on, UDP and TCP alike. Empty means ":3478".
	// Port 0 picks a free port (tests); Server.Port reports it.
	// When the host is empty or "::", the server listens on IPv4 and IPv6; "0.0.0.0" means IPv4 only. On IPv4 it
	// listens on each IPv4 address of the machine's interfaces that are up, unless RelayAddress or PublicIP is
	// set (then once, on every IPv4 address), so that every allocation relays on the address its client reached:
	// right for a LAN, where the machine has no single public address. On IPv6 it listens on each IPv6 address of
	// the interfaces (link-local ones left out), and relays on the address its client reached; an IPv6 address it
	// cannot listen on is left out with a warning. A client reaching an IPv4 address gets an IPv4 relay, one
	// reaching an IPv6 address an IPv6 relay. Otherwise (a host given) it listens once on the given address.
	ListenAddr string

	// TLS, if not nil, makes the server serve TURN over TLS (turns:, RFC 7065) with this configuration's
	// certificate: on TLSAddr, and on the connections HandOff is given (a TLS port shared with HTTPS). Its
	// NextProtos are replaced with TURN's ALPN protocol, "stun.turn". Nil means no TURN over TLS.
	TLS *tls.Config

	// TLSAddr is ":port", the port to serve TURN over TLS on, on the addresses ListenAddr listens on. Port 0
	// picks a free port (tests); Server.TLSPort reports it. Empty means no port of its own. It needs TLS.
	TLSAddr string

	// TLSOptional makes a TLSAddr the server cannot listen on (taken by another program) a warning, and the server
	// goes on without it; false makes it an error of Start.
	TLSOptional bool

	// SharedTLSPort is the port of an HTTPS listener that hands TURN-over-TLS connections to HandOff; ICEServers
	// lists a turns: URL on it, and on no other TLS port (a client reached the page on that port, so its network
	// lets it through). Zero means none. It needs TLS.
	SharedTLSPort int

	// UDPSockets is the number of UDP sockets listening on the port of each listening address, bound together
	// with SO_REUSEPORT: the kernel spreads the clients over them, and each is read by its own goroutine, so that
	// relaying goes past one core. Zero means GOMAXPROCS (at most 16); outside Linux there is always one.
	UDPSockets int

	// Realm is the TURN realm. Empty means "tandem".
	Realm string

	// Secret is the shared secret credentials are signed with, at least MinSecretLength bytes. Required.
	// With External, it is coturn's static-auth-secret.
	Secret string

	// CredentialTTL is how long a credential minted by ICEServers may start new allocations. Zero means
	// DefaultCredentialTTL. An allocation made while its credential was valid may be refreshed after it expired,
	// so that calls longer than the TTL are not cut.
	CredentialTTL time.Duration

	// PublicIP is the IPv4 address to advertise for IPv4 relays when the server is behind a 1:1 NAT (a cloud VM
	// whose interface has a private address). Invalid (the zero netip.Addr) means: advertise the address relays
	// are bound to. IPv6 relays are advertised on their own addresses.
	PublicIP netip.Addr

	// RelayAddress is the IPv4 address IPv4 relay sockets are bound to (and advertised, unless PublicIP is set).
	// Invalid means: the listening address, or every address when PublicIP is set and the server listens on all.
	RelayAddress netip.Addr

	// RelayMinPort and RelayMaxPort bound the UDP ports of relay sockets, inclusive, for a firewall. Both zero means
	// any free port the system picks.
	RelayMinPort, RelayMaxPort uint16

	// Host is the host name or IP address put in the stun: and turn: URLs handed to clients. Empty means PublicIP
	// when set, otherwise the host the client reached the web page by.
	Host string

	// AllowLoopback lets relays talk to loopback peers (127.0.0.0/8, ::1). Only for tests on one machine.
	AllowLoopback bool

	// AllowedPeers are networks relays may reach although they are denied by default (private, link-local, ...).
	// Nil means none: relays reach only globally routed unicast addresses, and the relay addresses of this server.
	AllowedPeers []netip.Prefix

	// DeniedPeers are networks relays must never reach, checked before AllowedPeers. Nil means none beyond the
	// defaults.
	DeniedPeers []netip.Prefix

	// MaxAllocationsPerSession caps the allocations of one login session (see ICEServers), counted until they
	// end, also after the login ended. Zero means DefaultMaxAllocationsPerSession; negative means no cap.
	MaxAllocationsPerSession int

	// MaxAllocationsPerAddress caps the allocations of one client IP address, whatever their credentials. Zero
	// means DefaultMaxAllocationsPerAddress; negative means no cap.
	MaxAllocationsPerAddress int

	// MaxRelayShare is the percentage (1-100) of the relay port range (RelayMinPort-RelayMaxPort) that one client
	// IP address may hold, at least one port; it lowers MaxAllocationsPerAddress when the range is small. Zero
	// means DefaultMaxRelayShare. Without a range it does not apply.
	MaxRelayShare int

	// ServiceUser is the user name of the echo test peer, which answers many calls with one login: its sessions
	// are held to MaxAllocationsPerAddress and MaxRelayShare but not to MaxAllocationsPerSession. Empty means
	// none.
	ServiceUser string

	// MaxTCPConns caps the TCP connections to the STUN/TURN port; a connection over the cap is closed at once.
	// Zero means DefaultMaxTCPConns; negative means no cap.
	MaxTCPConns int

	// MaxTCPConnsPerAddress caps the TCP connections from one client IP address. Zero means
	// DefaultMaxTCPConnsPerAddress; negative means no cap.
	MaxTCPConnsPerAddress int

	// TCPIdleTimeout is how long a TCP connection may stay without an allocation: after it connected, or after its
	// allocation ended. Zero means DefaultTCPIdleTimeout.
	TCPIdleTimeout time.Duration

	// External lists the stun:, turn: and turns: URLs of an external TURN server (coturn with use-auth-secret and
	// the same Secret), handed to clients with credentials beside, or instead of, the embedded server's. Nil means
	// none.
	External []string

	// ExternalOnly runs no embedded server: Start and Close do nothing and ICEServers lists only External, which
	// must then be set. False means the embedded server runs.
	ExternalOnly bool

	// Registerer receives the server's metrics. Nil means they are not registered anywhere.
	Registerer prometheus.Registerer

	// Logger receives the server's log. Nil means slog.Default().
	Logger *slog.Logger
}

// normalize validates c and fills in the defaults, returning the listen host and port. The host is the IPv6
// unspecified address for both families, the IPv4 one for IPv4 only.
func (c *Config) normalize() (host netip.Addr, port int, err error) {
	if c.ListenAddr == "" {
		c.ListenAddr = ":" + strconv.Itoa(DefaultPort)
	}
	h, p, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		return host, 0, fmt.Errorf("turnserver: listen address %q: %w", c.ListenAddr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return host, 0, fmt.Errorf("turnserver: listen address %q: bad port", c.ListenAddr)
	}
	if h == "" {
		host = netip.IPv6Unspecified()
	} else if host, err = netip.ParseAddr(h); err != nil || host.Zone() != "" {
		return host, 0, fmt.Errorf("turnserver: listen address %q: the host must be an IP address without a zone", c.ListenAddr)
	}
	host = host.Unmap()
	if host.Is6() && !host.IsUnspecified() && (c.PublicIP.IsValid() || c.RelayAddress.IsValid()) {
		return host, 0, fmt.Errorf("turnserver: listen address %q: the public IP and relay address are IPv4: listen on an IPv4 address, or on all", c.ListenAddr)
	}
	if err := c.checkTLS(); err != nil {
		return host, 0, err
	}
	if c.Realm == "" {
		c.Realm = "tandem"
	}
	if len(c.Secret) < MinSecretLength {
		return host, 0, fmt.Errorf("turnserver: the secret must be at least %d bytes", MinSecretLength)
	}
	if c.CredentialTTL < 0 {
		return host, 0, fmt.Errorf("turnserver: negative credential TTL %v", c.CredentialTTL)
	}
	for _, a := range []struct {
		name string
		ip   *netip.Addr
	}{{"public IP", &c.PublicIP}, {"relay address", &c.RelayAddress}} {
		if !a.ip.IsValid() {
			continue
		}
		*a.ip = a.ip.Unmap()
		if !a.ip.Is4() || a.ip.IsUnspecified() || a.ip.IsMulticast() {
			return host, 0, fmt.Errorf("turnserver: the %s %v must be a unicast IPv4 address", a.name, *a.ip)
		}
	}
	if (c.RelayMinPort == 0) != (c.RelayMaxPort == 0) || c.RelayMinPort > c.RelayMaxPort {
		return host, 0, fmt.Errorf("turnserver: bad relay port range %d-%d", c.RelayMinPort, c.RelayMaxPort)
	}
	if c.Host != "" && !validHost(c.Host) {
		return host, 0, fmt.Errorf("turnserver: %q is not a host name or IP address", c.Host)
	}
	for _, p := range append(append([]netip.Prefix(nil), c.AllowedPeers...), c.DeniedPeers...) {
		if !p.IsValid() {
			return host, 0, errors.New("turnserver: an invalid network in the allowed or denied peers")
		}
	}
	for _, d := range []struct {
		v   *int
		def int
	}{
		{&c.MaxAllocationsPerSession, DefaultMaxAllocationsPerSession},
		{&c.MaxAllocationsPerAddress, DefaultMaxAllocationsPerAddress},
		{&c.MaxRelayShare, DefaultMaxRelayShare},
		{&c.MaxTCPConns, DefaultMaxTCPConns},
		{&c.MaxTCPConnsPerAddress, DefaultMaxTCPConnsPerAddress},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxRelayShare < 0 || c.MaxRelayShare > 100 {
		return host, 0, fmt.Errorf("turnserver: the relay share %d%% is not between 1 and 100", c.MaxRelayShare)
	}
	if c.UDPSockets < 0 || c.UDPSockets > maxUDPSockets {
		return host, 0, fmt.Errorf("turnserver: %d UDP sockets: want 1 to %d", c.UDPSockets, maxUDPSockets)
	}
	if c.UDPSockets == 0 {
		c.UDPSockets = min(runtime.GOMAXPROCS(0), maxUDPSockets)
	}
	if c.TCPIdleTimeout < 0 {
		return host, 0, fmt.Errorf("turnserver: negative TCP idle timeout %v", c.TCPIdleTimeout)
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	for _, u := range c.External {
		if err := checkICEURL(u); err != nil {
			return host, 0, err
		}
	}
	if c.ExternalOnly && len(c.External) == 0 {
		return host, 0, errors.New("turnserver: ExternalOnly without External URLs")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return host, port, nil
}

// checkTLS checks the TURN-over-TLS settings.
func (c *Config) checkTLS() error {
	if c.TLS == nil && (c.TLSAddr != "" || c.SharedTLSPort != 0) {
		return errors.New("turnserver: a TLS port without a TLS configuration")
	}
	if c.SharedTLSPort < 0 || c.SharedTLSPort > 65535 {
		return fmt.Errorf("turnserver: shared TLS port %d out of range", c.SharedTLSPort)
	}
	if c.TLSAddr == "" {
		return nil
	}
	h, p, err := net.SplitHostPort(c.TLSAddr)
	if err != nil || h != "" {
		return fmt.Errorf("turnserver: TLS address %q: want :port", c.TLSAddr)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("turnserver: TLS address %q: bad port", c.TLSAddr)
	}
	return nil
}

// tlsPort returns the port of TLSAddr, or -1 when there is none.
func (c *Config) tlsPort() int {
	if c.TLSAddr == "" {
		return -1
	}
	_, p, _ := net.SplitHostPort(c.TLSAddr)
	n, _ := strconv.Atoi(p)
	return n
}

// checkICEURL checks that u looks like a stun:, turn: or turns: URL (RFC 7064, RFC 7065).
func checkICEURL(u string) error {
	scheme, rest, ok := strings.Cut(u, ":")
	switch {
	case !ok || rest == "":
		return fmt.Errorf("turnserver: %q is not a stun: or turn: URL", u)
	case scheme != "stun" && scheme != "stuns" && scheme != "turn" && scheme != "turns":
		return fmt.Errorf("turnserver: %q: the scheme must be stun, stuns, turn or turns", u)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return fmt.Errorf("turnserver: %q: %w", u, err)
		}
		if t := q.Get("transport"); t != "" && t != "udp" && t != "tcp" {
			return fmt.Errorf("turnserver: %q: transport must be udp or tcp", u)
		}
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("turnserver: %q: bad port", u)
		}
		host = h
	}
	if !validHost(host) {
		return fmt.Errorf("turnserver: %q: bad host", u)
	}
	return nil
}

// validHost reports whether h is an IP address or a plausible DNS name, so that it can be put in a URL as it is.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return !strings.Contains(h, "%")
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
