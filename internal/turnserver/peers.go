package turnserver

import (
	"net/netip"

	"tandem/internal/netaddr"
)

// peerFilter decides which peer addresses a relay may talk to: the operator's policy (netaddr.PeerPolicy, shared
// with the echo test peer) made from Config's AllowLoopback, AllowedPeers and DeniedPeers.
type peerFilter struct {
	policy *netaddr.PeerPolicy
}

func newPeerFilter(cfg *Config) peerFilter {
	return peerFilter{policy: netaddr.NewPeerPolicy(cfg.AllowLoopback, cfg.AllowedPeers, cfg.DeniedPeers)}
}

// allows reports whether ip may be a relay peer: not in the operator's denied networks, and either in the
// operator's allowed networks or outside the networks denied by default.
func (f *peerFilter) allows(ip netip.Addr) bool { return f.policy.Allows(ip) }

// IsRelay reports whether a is the advertised address of one of this server's live relays. The echo test peer asks,
// so that it may reach a caller whose only path is a relay of this server even when the relay's address is in a
// network the policy refuses (a LAN's).
func (s *Server) IsRelay(a netip.AddrPort) bool {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	s.amu.Lock()
	defer s.amu.Unlock()
	_, ok := s.relays[a]
	return ok
}

// HasRelayOn reports whether one of this server's live relays has the address ip, whatever its port.
func (s *Server) HasRelayOn(ip netip.Addr) bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	return s.relayIPs[ip.Unmap()] > 0
}
