package turnserver

import (
	"net/netip"
)

// deniedByDefault are the peer networks a relay refuses unless the operator allows them: everything that is not a
// globally routed unicast address, so that a TURN allocation cannot reach into the server's own networks.
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
	"64:ff9b::/96",    // NAT64, which could lead back into private IPv4 space
	"64:ff9b:1::/48",  // local-use NAT64
	"100::/64",        // discard
	"2001:db8::/32",   // documentation
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

// peerFilter decides which peer addresses a relay may talk to.
type peerFilter struct {
	denied  []netip.Prefix // the operator's, checked first
	allowed []netip.Prefix // the operator's, overriding the defaults
}

func newPeerFilter(cfg *Config) peerFilter {
	f := peerFilter{denied: cfg.DeniedPeers, allowed: append([]netip.Prefix(nil), cfg.AllowedPeers...)}
	if cfg.AllowLoopback {
		f.allowed = append(f.allowed, loopback...)
	}
	return f
}

// allows reports whether ip may be a relay peer: not in the operator's denied networks, and either in the
// operator's allowed networks or outside deniedByDefault.
func (f *peerFilter) allows(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	if containsAddr(f.denied, ip) {
		return false
	}
	if containsAddr(f.allowed, ip) {
		return true
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
