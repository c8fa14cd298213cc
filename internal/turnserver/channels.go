package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
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

// channelTable is an immutable snapshot of one allocation's channels, replaced as a whole on every change.
type channelTable struct {
	byNumber map[uint16]channelRoute
	byPeer   map[netip.AddrPort]channelRoute
}

// clientLink is how a relay reaches its allocation's client: a UDP listening socket and the client's address, or
// the client's TCP connection.
type clientLink struct {
	udp  *net.UDPConn
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
	channels map[uint16]netip.AddrPort
	perms    map[netip.Addr]struct{} // the peer IPs with a permission
}

// publishLocked replaces the relay's channel table with one made from its channels and permissions.
func (c *relayConn) publishLocked() {
	t := &channelTable{
		byNumber: make(map[uint16]channelRoute, len(c.ch.channels)),
		byPeer:   make(map[netip.AddrPort]channelRoute, len(c.ch.channels)),
	}
	for number, peer := range c.ch.channels {
		r := channelRoute{peer: peer, number: number}
		switch {
		case !c.permittedLocked(peer.Addr()):
			r.toPeer, r.toClient = dropNoPerm, dropNoPerm
		case !c.s.filter.allows(peer.Addr()):
			r.toPeer = leaveToPion
		}
		t.byNumber[number] = r
		t.byPeer[peer] = r
	}
	c.routes.Store(t)
}

func (c *relayConn) permittedLocked(ip netip.Addr) bool {
	_, ok := c.ch.perms[ip]
	return ok
}

func (c *relayConn) bindChannel(number uint16, peer netip.AddrPort, bound bool) {
	c.ch.mu.Lock()
	defer c.ch.mu.Unlock()
	if bound {
		if c.ch.channels == nil {
			c.ch.channels = make(map[uint16]netip.AddrPort)
		}
		c.ch.channels[number] = peer
	} else if c.ch.channels[number] == peer {
		delete(c.ch.channels, number)
	}
	c.publishLocked()
}

func (c *relayConn) permit(ip netip.Addr, permitted bool) {
	c.ch.mu.Lock()
	defer c.ch.mu.Unlock()
	if permitted {
		if c.ch.perms == nil {
			c.ch.perms = make(map[netip.Addr]struct{})
		}
		c.ch.perms[ip] = struct{}{}
	} else {
		delete(c.ch.perms, ip)
	}
	c.publishLocked()
}

// fromClient relays the ChannelData frame b of the relay's client to the channel's peer. It reports false when
// pion is to have the frame: no such channel, a length that does not fit, or a peer only pion's path may send to.
func (c *relayConn) fromClient(b []byte) bool {
	number := binary.BigEndian.Uint16(b)
	length := int(binary.BigEndian.Uint16(b[2:]))
	if channelHeader+length > len(b) {
		return false
	}
	t := c.routes.Load()
	if t == nil {
		return false
	}
	r, ok := t.byNumber[number]
	if !ok {
		return false
	}
	switch r.toPeer {
	case dropNoPerm:
		return true
	case leaveToPion:
		return false
	}
	n, _ := c.udp.WriteToUDPAddrPort(b[channelHeader:channelHeader+length], r.peer)
	c.s.metrics.toPeer.Add(float64(n))
	c.channelPackets.Add(1)
	return true
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
	if l.tcp == nil {
		_, _ = l.udp.WriteToUDPAddrPort(p[:channelHeader+n], l.addr)
		return true
	}
	size := channelHeader + (n+3)&^3 // padded to a multiple of 4 bytes over TCP (RFC 8656, section 12.5)
	if size > len(p) {
		return false
	}
	clear(p[channelHeader+n : size])
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
	switch key.network {
	case "udp":
		s.mu.Lock()
		conns := s.udpConns[key.dst]
		s.mu.Unlock()
		if len(conns) == 0 {
			return
		}
		// Any socket of the port reaches the client from the address it sent to; spread the relays over them.
		rc.link.Store(&clientLink{udp: conns[int(rc.addr.Port())%len(conns)], addr: key.src})
		k := udpClient{local: key.dst, client: key.src}
		s.cmu.Lock()
		s.udpClients[k] = rc
		s.cmu.Unlock()
		rc.clientKey = k
	case "tcp":
		s.tcpLimits.mu.Lock()
		tc := s.tcpLimits.conns[connKey{remote: key.src, local: key.dst}]
		s.tcpLimits.mu.Unlock()
		if tc == nil {
			return
		}
		rc.link.Store(&clientLink{tcp: tc})
		tc.relay.Store(rc)
	}
}

// unlinkClient undoes linkClient as the relay socket closes.
func (s *Server) unlinkClient(rc *relayConn) {
	l := rc.link.Swap(nil)
	if l == nil {
		return
	}
	if l.tcp != nil {
		l.tcp.relay.CompareAndSwap(rc, nil)
		return
	}
	s.cmu.Lock()
	if s.udpClients[rc.clientKey] == rc {
		delete(s.udpClients, rc.clientKey)
	}
	s.cmu.Unlock()
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
