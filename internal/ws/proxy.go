package ws

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Clients behind a reverse proxy (Config.TrustedProxies). A connection whose TCP peer is a trusted proxy is
// not held to the per-address caps as it is accepted (every client of the proxy has the proxy's address); once
// its handshake has been read, the client's own address is taken from the proxy's X-Forwarded-For header (or,
// when the request has none, Forwarded), the caps are applied to that address, and RemoteIP returns it. From
// any other peer the headers are ignored: a stranger cannot choose the address it is counted under.

// ParseTrustedProxies reads a comma-separated list of addresses and CIDR prefixes ("10.0.0.5, 192.168.0.0/16,
// fd00::/8"); an empty list is none.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("ws: trusted proxy %q: not an address or a CIDR prefix (e.g. 10.0.0.0/8)", f)
			}
			if p.Addr().Zone() != "" {
				return nil, fmt.Errorf("ws: trusted proxy %q: no zone, please", f)
			}
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)).Masked())
			continue
		}
		ip, err := netip.ParseAddr(f)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("ws: trusted proxy %q: not an address or a CIDR prefix (e.g. 10.0.0.0/8)", f)
		}
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}

// unmappedBits is the length of p once its address is unmapped (an IPv4-mapped ::ffff:a.b.c.d/n is a.b.c.d/n-96).
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

// trustedProxy reports whether ip is one of Config.TrustedProxies.
func (s *Server) trustedProxy(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// errForwarded: a trusted proxy's header names no valid client address where tandem looks for it.
var errForwarded = errors.New("ws: the proxy's X-Forwarded-For (or Forwarded) header has no valid client address")

// forwardedClient is the client's address behind peer, a trusted proxy, from the request's X-Forwarded-For
// (xff, its lines joined with commas) or, when it has none, Forwarded (fwd): the rightmost address that is not
// itself a trusted proxy (the entries further left were written by the client, or proxies it chose, and are not
// looked at); the leftmost when all are trusted. No header: the peer itself. An entry that decides but is not an
// address (garbage, "unknown", an obfuscated name) is errForwarded.
func (s *Server) forwardedClient(peer netip.Addr, xff, fwd string) (netip.Addr, error) {
	var entries []string
	switch {
	case strings.TrimSpace(xff) != "":
		entries = strings.Split(xff, ",")
	case strings.TrimSpace(fwd) != "":
		for _, elem := range strings.Split(fwd, ",") {
			for _, pair := range strings.Split(elem, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(strings.TrimSpace(k), "for") {
					entries = append(entries, strings.Trim(strings.TrimSpace(v), `"`))
				}
			}
		}
		if len(entries) == 0 {
			return netip.Addr{}, errForwarded
		}
	default:
		return peer.Unmap(), nil
	}
	for i := len(entries) - 1; i >= 0; i-- {
		ip, ok := parseForwardedAddr(entries[i])
		if !ok {
			return netip.Addr{}, errForwarded
		}
		if i == 0 || !s.trustedProxy(ip) {
			return ip, nil
		}
	}
	return netip.Addr{}, errForwarded // not reached: entries is not empty
}

// parseForwardedAddr reads one entry of X-Forwarded-For or Forwarded's for=: an address, perhaps with a port,
// an IPv6 address perhaps in brackets.
func parseForwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
		return ip.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			if ip, err := netip.ParseAddr(inner); err == nil && ip.Is6() && ip.Zone() == "" {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// requestClient is the client's address of a request that came through net/http.
func (s *Server) requestClient(r *http.Request) (netip.Addr, error) {
	var peer netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr().Unmap()
	}
	if !peer.IsValid() || !s.trustedProxy(peer) {
		return peer, nil
	}
	return s.forwardedClient(peer, strings.Join(r.Header.Values("X-Forwarded-For"), ","), strings.Join(r.Header.Values("Forwarded"), ","))
}

// readdress counts c, accepted from a trusted proxy (and so not held to the per-address caps), under its client's
// address found in its handshake, unless that address is at a cap: then it returns the refusal.
func (s *Server) readdress(c *Conn, xff, fwd string) *refusal {
	client, err := s.forwardedClient(c.ip, xff, fwd)
	if err != nil {
		return refuseForwarded
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.acct != acctAdmitted || c.addr != nil {
		return nil
	}
	c.ip = client
	key, limited := s.limited(client)
	if !limited {
		return nil
	}
	a := s.addrs[key]
	switch {
	case a != nil && s.cfg.MaxConnsPerAddr > 0 && a.conns >= s.cfg.MaxConnsPerAddr:
		return refuseAddr
	case a != nil && s.cfg.MaxUnloggedPerAddr > 0 && a.unlogged >= s.cfg.MaxUnloggedPerAddr:
		return refuseAddrWait
	case a == nil:
		a = &addrCount{key: key}
		s.addrs[key] = a
	}
	a.conns++
	a.unlogged++
	c.addr = a
	return nil
}
