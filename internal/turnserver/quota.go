package turnserver

import (
	"net"
	"net/netip"
	"time"
)

// The permission and channel requests of one allocation are paced by a token bucket: permissionBurst at once,
// then one every permissionInterval. Every permission and channel binding pion holds was granted or refreshed by
// such a request within its lifetime (5 minutes for a permission, 10 for a channel), so an allocation never holds
// more than permissionBurst + 10 minutes / permissionInterval of them (220), where pion alone would hold a
// permission for every address asked and 16,384 channels (each a timer, and a linear scan per relayed packet).
// A browser asks for two (a permission and a channel) per remote candidate, and refreshes them every few minutes.
const (
	permissionBurst    = 100
	permissionInterval = 5 * time.Second
)

// session is the embedded server's record of one login's credentials.
type session struct {
	expiry  time.Time // the latest expiry of the credentials minted for it
	ended   bool      // the login is gone: its credentials start no allocation
	service bool      // the echo test peer's: not held to the per-session cap
	allocs  int       // allocations made or under way with its credentials
}

// allocKey is an allocation's 5-tuple, as pion sees it (the transport of a TCP allocation is its TCP connection).
type allocKey struct {
	network  string
	src, dst netip.AddrPort
}

// clientKey is a client's transport address: one UDP socket, or one TCP connection.
type clientKey struct {
	network string
	src     netip.AddrPort
}

type allocation struct {
	tag string
	ip  netip.Addr
}

// reservation is a quota granted to an Allocate request, until pion reports the allocation made or failed.
type reservation struct {
	tag string
	ip  netip.Addr
}

// permissionBucket paces the permission and channel requests of a client's allocations.
type permissionBucket struct {
	allocs int
	tokens float64
	last   time.Time
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// clientNet is what the per-address caps count a client IP address as: an IPv4 address, or an IPv6 address's
// /64 (one subscriber's network: a client given a /64 has as many addresses as it likes in it).
func clientNet(ip netip.Addr) netip.Addr {
	if ip = ip.Unmap(); ip.Is4() {
		return ip
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.Addr()
}

func clientKeyOf(src net.Addr) clientKey {
	return clientKey{network: src.Network(), src: addrPortOf(src)}
}

// registerSession notes that credentials for the session tagged tag were handed out, valid until expiry.
func (s *Server) registerSession(tag string, expiry time.Time, service bool) {
	s.amu.Lock()
	defer s.amu.Unlock()
	if ss := s.sessions[tag]; ss != nil {
		if expiry.After(ss.expiry) {
			ss.expiry = expiry
		}
		ss.service = ss.service || service
		return
	}
	s.sessions[tag] = &session{expiry: expiry, service: service}
	if len(s.sessions) >= s.sweepAt {
		s.sweepSessionsLocked()
	}
}

// sweepSessionsLocked drops the sessions whose credentials expired and that hold no allocation: they could start
// none anyway. It runs each time the table doubles, so that it costs O(1) per login.
func (s *Server) sweepSessionsLocked() {
	now := s.now()
	for tag, ss := range s.sessions {
		if ss.allocs == 0 && now.After(ss.expiry) {
			delete(s.sessions, tag)
		}
	}
	s.sweepAt = max(2*len(s.sessions), minSessionSweep)
}

const minSessionSweep = 1024

// EndSession tells the server that the login session (as given to ICEServers) is gone: its credentials start no
// new allocation from now on, while the allocations they made keep working (refreshes, permissions, channels)
// until they end. The server then keeps the session only while it has allocations.
func (s *Server) EndSession(session string) {
	if session == "" {
		return
	}
	tag := s.creds.SessionTag(session)
	s.amu.Lock()
	defer s.amu.Unlock()
	ss := s.sessions[tag]
	switch {
	case ss == nil:
	case ss.allocs == 0:
		delete(s.sessions, tag)
	default:
		ss.ended = true
	}
}

// sessionUsableLocked reports whether the session tagged tag may start allocations: known, not ended, not expired.
func (s *Server) sessionUsableLocked(tag string) bool {
	ss := s.sessions[tag]
	return ss != nil && !ss.ended && !s.now().After(ss.expiry)
}

// addressCap is the number of allocations one client address may hold: the per-address cap, and its share
// of the relay port range when there is one.
func (s *Server) addressCap() int {
	c := s.cfg.MaxAllocationsPerAddress
	if s.cfg.RelayMinPort != 0 {
		share := max((int(s.cfg.RelayMaxPort)-int(s.cfg.RelayMinPort)+1)*s.cfg.MaxRelayShare/100, 1)
		if c < 0 || share < c {
			c = share
		}
	}
	return c
}

// quota is pion's QuotaHandler, asked before each new allocation: the credential's login must still be there,
// and the login and the client's address must be under their caps. A granted quota is held as a reservation
// until pion reports the allocation made (onAllocationCreated) or failed (onAllocationError).
func (s *Server) quota(username, _ string, src net.Addr) bool {
	_, tag, err := s.creds.check(username)
	if err != nil {
		s.limited(limitExpired, src, username)
		return false
	}
	ip := clientNet(addrPortOf(src).Addr())
	s.amu.Lock()
	ss := s.sessions[tag]
	reason := ""
	switch {
	case !s.sessionUsableLocked(tag):
		reason = limitSessionEnded
	case !ss.service && s.cfg.MaxAllocationsPerSession >= 0 && ss.allocs >= s.cfg.MaxAllocationsPerSession:
		reason = limitSession
	case s.addrCap >= 0 && s.perAddr[ip] >= s.addrCap:
		reason = limitAddress
	default:
		ss.allocs++
		s.perAddr[ip]++
		k := clientKeyOf(src)
		s.pending[k] = append(s.pending[k], reservation{tag: tag, ip: ip})
	}
	s.amu.Unlock()
	if reason != "" {
		s.limited(reason, src, username)
		return false
	}
	return true
}

// releaseLocked gives back the quota of an allocation or reservation.
func (s *Server) releaseLocked(tag string, ip netip.Addr) {
	if n := s.perAddr[ip]; n <= 1 {
		delete(s.perAddr, ip)
	} else {
		s.perAddr[ip] = n - 1
	}
	if ss := s.sessions[tag]; ss != nil {
		ss.allocs--
		if ss.allocs <= 0 && (ss.ended || s.now().After(ss.expiry)) {
			delete(s.sessions, tag)
		}
	}
}

// takeReservationLocked removes and returns the oldest reservation of the client at src.
func (s *Server) takeReservationLocked(src net.Addr) (reservation, bool) {
	k := clientKeyOf(src)
	rs := s.pending[k]
	if len(rs) == 0 {
		return reservation{}, false
	}
	r := rs[0]
	if len(rs) == 1 {
		delete(s.pending, k)
	} else {
		s.pending[k] = rs[1:]
	}
	return r, true
}

func (s *Server) onAllocationCreated(src, dst net.Addr, _, username, _ string, relay net.Addr, _ int) {
	key := allocKey{network: src.Network(), src: addrPortOf(src), dst: addrPortOf(dst)}
	s.amu.Lock()
	r, ok := s.takeReservationLocked(src)
	if !ok { // not through quota: cannot happen, but keep the books right
		_, tag, _, _ := parseUsername(username)
		r = reservation{tag: tag, ip: clientNet(key.src.Addr())}
		s.perAddr[r.ip]++
		if ss := s.sessions[r.tag]; ss != nil {
			ss.allocs++
		}
	}
	s.allocs[key] = allocation(r)
	s.live[liveKey(src, username)]++
	ck := clientKeyOf(src)
	b := s.buckets[ck]
	if b == nil {
		b = &permissionBucket{tokens: permissionBurst, last: s.now()}
		s.buckets[ck] = b
	}
	b.allocs++
	s.amu.Unlock()
	s.linkClient(key, relay)
	if key.network == "tcp" {
		s.tcpAllocated(key.src, key.dst, true)
	}
	s.cfg.Logger.Debug("TURN allocation", "client", src, "username", username, "relay", relay)
}

func (s *Server) onAllocationDeleted(src, dst net.Addr, _, username, _ string) {
	key := allocKey{network: src.Network(), src: addrPortOf(src), dst: addrPortOf(dst)}
	s.amu.Lock()
	if a, ok := s.allocs[key]; ok {
		delete(s.allocs, key)
		s.releaseLocked(a.tag, a.ip)
	}
	lk := liveKey(src, username)
	if s.live[lk] <= 1 {
		delete(s.live, lk)
	} else {
		s.live[lk]--
	}
	ck := clientKeyOf(src)
	if b := s.buckets[ck]; b != nil {
		if b.allocs--; b.allocs <= 0 {
			delete(s.buckets, ck)
		}
	}
	s.amu.Unlock()
	if key.network == "tcp" {
		s.tcpAllocated(key.src, key.dst, false)
	}
}

// onAllocationError is told of every request pion failed; after an Allocate request whose quota was granted, it
// is the failure to make the allocation (no relay port, say), whose reservation is then given back.
func (s *Server) onAllocationError(src, _ net.Addr, _, _ string) {
	s.amu.Lock()
	defer s.amu.Unlock()
	if r, ok := s.takeReservationLocked(src); ok {
		s.releaseLocked(r.tag, r.ip)
	}
}

func liveKey(src net.Addr, username string) string {
	return src.Network() + " " + src.String() + " " + username
}

// liveAllocation reports whether the client at src holds an allocation made with username.
func (s *Server) liveAllocation(src net.Addr, username string) bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	return s.live[liveKey(src, username)] > 0
}

// takePermissionToken takes a token from the permission bucket of the client at src, reporting false when it is
// empty (or the client holds no allocation, which pion refuses anyway).
func (s *Server) takePermissionToken(src net.Addr) bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	b := s.buckets[clientKeyOf(src)]
	if b == nil {
		return false
	}
	now := s.now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()/permissionInterval.Seconds(), permissionBurst)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// limited counts a request or connection refused at a limit. It logs at debug level only: a client can make it
// happen as often as it likes.
func (s *Server) limited(limit string, client net.Addr, username string) {
	s.metrics.limited.WithLabelValues(limit).Inc()
	s.cfg.Logger.Debug("TURN limit reached", "limit", limit, "client", client, "username", username)
}
