package netaddr

import (
	"net/netip"
)

// deniedByDefault are the networks a PeerPolicy refuses unless the operator allows them: everything that is not a
// globally routed unicast address, so that a stranger's word (a TURN permission, an ICE candidate) cannot make
// tandem send packets into the server's own networks.
var deniedByDefault = mustPrefixes(
	"0.0.0.0/8",       // "this network", and the unspecified address
	"10.0.0.0/8",      // private (RFC 1918)
	"100.64.0.0/10",   // carrier-grade NAT shared space (RFC 6598)
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local
	"172.16.0.0/12",   // private (RFC 1918)
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // documentation (TEST-NET-1)
	"192.88.99.0/24",  // deprecated 6to4 relay anycast
	"192.168.0.0/16",  // private (RFC 1918)
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // documentation (TEST-NET-2)
	"203.0.113.0/24",  // documentation (TEST-NET-3)
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, and the limited broadcast address
	"::/128",          // unspecified
	"::1/128",         // loopback
	"::/96",           // IPv4-compatible (deprecated), which embeds IPv4 addresses
	"::ffff:0:0:0/96", // IPv4-translated (SIIT), which could lead back into private IPv4 space
	"64:ff9b::/96",    // NAT64, which could lead back into private IPv4 space
	"64:ff9b:1::/48",  // local-use NAT64
	"100::/64",        // discard
	"2001:2::/48",     // benchmarking
	"2001:db8::/32",   // documentation
	"3fff::/20",       // documentation (RFC 9637)
	"2002::/16",       // 6to4, which embeds IPv4 addresses
	"fc00::/7",        // unique local (ULA)
	"fe80::/10",       // link-local
	"fec0::/10",       // deprecated site-local
	"ff00::/8",        // multicast
)

var loopback = mustPrefixes("127.0.0.0/8", "::1/128")

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// PeerPolicy decides which addresses tandem may send packets to when a client names them: the TURN relay's peers,
// and the echo test peer's remote ICE candidates. By default it allows only globally routed unicast addresses;
// the operator denies more networks, allows some of the default-denied ones back (a LAN's), and, for tests on one
// machine, loopback. A nil *PeerPolicy is the default policy. It is immutable and safe for concurrent use.
type PeerPolicy struct {
	denied  []netip.Prefix // the operator's, checked first
	allowed []netip.Prefix // the operator's, overriding the defaults
}

// NewPeerPolicy returns the policy that refuses the networks in denied, then allows those in allowed (and loopback,
// if allowLoopback is set), then refuses the default-denied networks (loopback, private, link-local, multicast,
// documentation and the other special ranges) and allows the rest. It keeps its own copies of the slices.
func NewPeerPolicy(allowLoopback bool, allowed, denied []netip.Prefix) *PeerPolicy {
	p := &PeerPolicy{denied: append([]netip.Prefix(nil), denied...), allowed: append([]netip.Prefix(nil), allowed...)}
	if allowLoopback {
		p.allowed = append(p.allowed, loopback...)
	}
	return p
}

// Allows reports whether packets may go to ip: a valid address without a zone, not in the operator's denied
// networks, and either in the operator's allowed networks or outside the default-denied ones. An IPv4-mapped IPv6
// address is judged as the IPv4 address it maps.
func (p *PeerPolicy) Allows(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	if p != nil {
		if containsAddr(p.denied, ip) {
			return false
		}
		if containsAddr(p.allowed, ip) {
			return true
		}
	}
	return !containsAddr(deniedByDefault, ip)
}

func containsAddr(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
