package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// The channel data path.
//
// pion/turn handles every packet of an allocation on its generic path: a goroutine per relay socket, a new
// buffer per ChannelData frame, address formatting and copying for log calls that print nothing. Media relayed
// through a channel binding (RFC 8656, section 12: what browsers use once the binding is made) is nearly all the
// packets a TURN server sees, so tandem relays those itself, and leaves everything else to pion: authentication,
// allocations, permissions, channel bindings and their lifetimes, Send and Data indications.
//
// tandem keeps a copy of each allocation's channel bindings and permissions, kept current by pion's events
// (OnChannelCreated/Deleted, OnPermissionCreated/Deleted: pion's own timers fire them as bindings expire). With
// it, the listening socket's reader forwards a client's ChannelData to the peer on the spot, and the relay
// socket's reader sends a bound peer's datagram to the client as ChannelData, the header written in front of the
// data in the buffer it was read into: no allocation, no lock but a read lock, no goroutine handoff.
//
// What it relays is what pion would, with one difference, on the side of RFC 8656 (section 9): data on a channel
// whose peer no longer has a permission (a permission lasts 5 minutes, a channel 10; a refreshed channel refreshes
// its permission) is dropped, where pion relays it. Anything the table does not know (a channel number not bound,
// a peer with no channel, a frame whose length does not fit) goes to pion, which refuses or relays it as before.

// channelVerdict is what the data path does with a packet on a channel.
type channelVerdict uint8

const (
	relayHere   channelVerdict = iota // permitted: relayed by tandem
	dropNoPerm                        // the peer's permission has expired: dropped (RFC 8656, section 9)
	leaveToPion                       // permitted, but to a peer the filter denies (a relay of this server): pion's path, whose send is checked
)

type channelRoute struct {
	peer     netip.AddrPort
	number   uint16
	toPeer   channelVerdict
	toClient channelVerdict
}

// channelTable is an immutable snapshot of one allocation's channels, replaced as a whole on every change. It is
// a slice searched from the start: an allocation has a channel per remote candidate of its call, a handful (at
// most a few hundred, paced by its permission bucket), and a slice costs far less memory than maps.
type channelTable struct {
	routes []channelRoute
}

func (t *channelTable) byNumber(number uint16) (channelRoute, bool) {
	for _, r := range t.routes {
		if r.number == number {
			return r, true
		}
	}
	return channelRoute{}, false
}

func (t *channelTable) byPeer(peer netip.AddrPort) (channelRoute, bool) {
	for _, r := range t.routes {
		if r.peer == peer {
			return r, true
		}
	}
	return channelRoute{}, false
}

// clientLink is how a relay reaches its allocation's client: a UDP listening socket and the client's address, or
// the client's TCP connection.
type clientLink struct {
	udp  *net.UDPConn
	sock *udpSocket // the listening socket, when a loop serves it
	addr netip.AddrPort
	tcp  *trackedConn
}

// udpClient is a UDP allocation's key on the listening side: the listening address and the client's address.
type udpClient struct {
	local, client netip.AddrPort
}

// channelState is a relay socket's copy of its allocation's channels and permissions.
type channelState struct {
	mu       sync.Mutex // guards channels and perms, and the replacing of the table
	channels []boundChannel
	perms    []netip.Addr // the peer IPs with a permission
}

type boundChannel struct {
	number uint16
	peer   netip.AddrPort
}

// publishLocked replaces the relay's channel table with one made from its channels and permissions.
func (c *relayConn) publishLocked() {
	t := &channelTable{routes: make([]channelRoute, 0, len(c.ch.channels))}
	for _, b := range c.ch.channels {
		r := channelRoute{peer: b.peer, number: b.number}
		switch {
		case !slices.Contains(c.ch.perms, b.peer.Addr()):
			r.toPeer, r.toClient = dropNoPerm, dropNoPerm
		case !c.s.filter.allows(b.peer.Addr()):
			r.toPeer = leaveToPion
		}
		t.routes = append(t.routes, r)
	}
	c.routes.Store(t)
}

func (c *relayConn) bindChannel(number uint16, peer netip.AddrPort, bound bool) {
	c.ch.mu.Lock()
	defer c.ch.mu.Unlock()
	b := boundChannel{number: number, peer: peer}
	i := slices.IndexFunc(c.ch.channels, func(x boundChannel) bool { return x.number == number })
	switch {
	case bound && i < 0:
		c.ch.channels = append(c.ch.channels, b)
	case bound:
		c.ch.channels[i] = b
	case i >= 0 && c.ch.channels[i] == b:
		c.ch.channels = slices.Delete(c.ch.channels, i, i+1)
	}
	c.publishLocked()
}

func (c *relayConn) permit(ip netip.Addr, permitted bool) {
	c.ch.mu.Lock()
	defer c.ch.mu.Unlock()
	i := slices.Index(c.ch.perms, ip)
	switch {
	case permitted && i < 0:
		c.ch.perms = append(c.ch.perms, ip)
	case !permitted && i >= 0:
		c.ch.perms = slices.Delete(c.ch.perms, i, i+1)
	}
	c.publishLocked()
}

func (c *relayConn) fromClient(b []byte) bool {
	data, peer, route := c.routeFromClient(b)
	switch route {
	case routeToPion:
		return false
	case routeDrop:
		return true
	}
	n := c.sendToPeer(data, peer)
	c.s.metrics.toPeer.Add(float64(n))
	c.channelPackets.Add(1)
	return true
}

// What becomes of a ChannelData frame from the client (routeFromClient).
const (
	routeToPeer = iota // relayed by tandem to the channel's peer
	routeDrop          // dropped: no permission for the peer
	routeToPion        // handed to pion: a channel tandem does not know, a peer the filter leaves to pion, or a short frame
)

// routeFromClient looks up where the ChannelData frame b from the client goes: with routeToPeer, its data and
// the peer to send them to.
func (c *relayConn) routeFromClient(b []byte) (data []byte, peer netip.AddrPort, route int) {
	number := binary.BigEndian.Uint16(b)
	length := int(binary.BigEndian.Uint16(b[2:]))
	if channelHeader+length > len(b) {
		return nil, netip.AddrPort{}, routeToPion
	}
	t := c.routes.Load()
	if t == nil {
		return nil, netip.AddrPort{}, routeToPion
	}
	r, ok := t.byNumber(number)
	if !ok {
		return nil, netip.AddrPort{}, routeToPion
	}
	switch r.toPeer {
	case dropNoPerm:
		return nil, netip.AddrPort{}, routeDrop
	case leaveToPion:
		return nil, netip.AddrPort{}, routeToPion
	}
	return b[channelHeader : channelHeader+length], r.peer, routeToPeer
}

// toClient sends the n bytes of data at p[channelHeader:] to the client on channel number, the header written
// in p in front of them (and padding after them over TCP). It reports false when it cannot (the client is not
// known yet).
func (c *relayConn) toClient(p []byte, n int, number uint16) bool {
	l := c.link.Load()
	if l == nil {
		return false
	}
	binary.BigEndian.PutUint16(p, number)
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	c.channelPackets.Add(1)
	switch {
	case l.sock != nil:
		_ = l.sock.sendTo(p[:channelHeader+n], l.addr)
		return true
	case l.tcp == nil:
		_, _ = l.udp.WriteToUDPAddrPort(p[:channelHeader+n], l.addr)
		return true
	}
	size := channelHeader + (n+3)&^3 // padded to a multiple of 4 bytes over TCP (RFC 8656, section 12.5)
	if size > len(p) {
		return false
	}
	clear(p[channelHeader+n : size])
	if l.tcp.lc != nil {
		l.tcp.lc.writeMedia(p[:size])
		return true
	}
	_, _ = l.tcp.Conn.Write(p[:size])
	return true
}

// channelHeader is the size of a ChannelData header: the channel number and the data's length.
const channelHeader = 4

// isChannelData reports whether b starts like a ChannelData frame: a channel number 0x4000-0x7FFF and a length.
func isChannelData(b []byte) bool {
	return len(b) >= channelHeader && b[0]&0xC0 == 0x40
}

// relayAt returns the relay socket whose address is relay, or nil.
func (s *Server) relayAt(relay net.Addr) *relayConn {
	ap := addrPortOf(relay)
	s.amu.Lock()
	defer s.amu.Unlock()
	return s.relays[ap]
}

// channelRelayAt is relayAt when tandem relays channel data itself, nil otherwise.
func (s *Server) channelRelayAt(relay net.Addr) *relayConn {
	if !s.channelPath {
		return nil
	}
	return s.relayAt(relay)
}

// linkClient tells the relay socket of a new allocation how to reach its client, and the listening side which
// relay a UDP client's ChannelData goes to.
func (s *Server) linkClient(key allocKey, relay net.Addr) {
	rc := s.channelRelayAt(relay)
	if rc == nil {
		return
	}
	var link *clientLink
	switch key.network {
	case "udp":
		s.mu.Lock()
		conns, socks := s.udpConns[key.dst], s.udpSocks[key.dst]
		s.mu.Unlock()
		if rc.raw != nil {
			if len(socks) == 0 {
				return
			}
			// Any socket of the port reaches the client from the address it sent to; the loop's own lets it batch.
			link = &clientLink{sock: socks[rc.loop.index%len(socks)], addr: key.src}
			break
		}
		if len(conns) == 0 {
			return
		}
		// Any socket of the port reaches the client from the address it sent to; spread the relays over them.
		link = &clientLink{udp: conns[int(rc.addr.Port())%len(conns)], addr: key.src}
	case "tcp":
		s.tcpLimits.mu.Lock()
		link = &clientLink{tcp: s.tcpLimits.conns[connKey{remote: key.src, local: key.dst}]}
		s.tcpLimits.mu.Unlock()
		if link.tcp == nil {
			return
		}
	default:
		return
	}
	// Under cmu, so that a relay closing meanwhile (unlinkClient) leaves nothing behind.
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if rc.unlinked {
		return
	}
	if link.tcp != nil {
		link.tcp.relay.Store(rc)
	} else {
		rc.clientKey = udpClient{local: key.dst, client: key.src}
		s.udpClients[rc.clientKey] = rc
	}
	rc.link.Store(link)
}

// unlinkClient undoes linkClient as the relay socket closes, for good.
func (s *Server) unlinkClient(rc *relayConn) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	rc.unlinked = true
	l := rc.link.Swap(nil)
	switch {
	case l == nil:
	case l.tcp != nil:
		l.tcp.relay.CompareAndSwap(rc, nil)
	case s.udpClients[rc.clientKey] == rc:
		delete(s.udpClients, rc.clientKey)
	}
}

// udpRelayOf returns the relay of the UDP client at client on the listening address local, or nil.
func (s *Server) udpRelayOf(local, client netip.AddrPort) *relayConn {
	s.cmu.RLock()
	rc := s.udpClients[udpClient{local: local, client: client}]
	s.cmu.RUnlock()
	return rc
}

func (s *Server) onChannelCreated(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
	if rc := s.channelRelayAt(relay); rc != nil {
		rc.bindChannel(number, addrPortOf(peer), true)
	}
}

func (s *Server) onChannelDeleted(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
	if rc := s.channelRelayAt(relay); rc != nil {
		rc.bindChannel(number, addrPortOf(peer), false)
	}
}

func (s *Server) onPermissionCreated(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
	if rc := s.channelRelayAt(relay); rc != nil {
		if ip, ok := netip.AddrFromSlice(peer); ok {
			rc.permit(ip.Unmap(), true)
		}
	}
}

func (s *Server) onPermissionDeleted(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
	if rc := s.channelRelayAt(relay); rc != nil {
		if ip, ok := netip.AddrFromSlice(peer); ok {
			rc.permit(ip.Unmap(), false)
		}
	}
}
