package turnserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"tandem/internal/turnserver/turnclient"
)

// TestLoopRelaysWithoutAllocating sends ChannelData round trips through an allocation (client to peer and back)
// and checks that the whole process allocates nothing for them: over UDP through the loops' recvmmsg and sendmmsg;
// over TCP through the loop that reads the client's connection and writes the peer's datagrams to it.
func TestLoopRelaysWithoutAllocating(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true })
			if s.loops == nil {
				t.Skip("no data loops on this system")
			}
			roundTrip, rc := loopRoundTrip(t, s, network)
			if link := rc.link.Load(); network == "tcp" && (link == nil || link.tcp == nil || link.tcp.lc == nil) {
				t.Fatal("the TCP client's connection is not served by a loop")
			}
			roundTrip()
			before := rc.channelPackets.Load()
			if allocs := testing.AllocsPerRun(200, roundTrip); allocs != 0 {
				t.Errorf("%v allocations per round trip through the loops, want 0", allocs)
			}
			if got := rc.channelPackets.Load() - before; got != 2*201 {
				t.Errorf("the channel data path relayed %d packets, want %d", got, 2*201)
			}
		})
	}
}

// BenchmarkLoopRoundTrip measures a 1,200-byte ChannelData round trip through a UDP allocation: client to peer,
// and back, through the loops (with the test's client and peer, on the same cores).
func BenchmarkLoopRoundTrip(b *testing.B) {
	s, _ := startServer(b, func(c *Config) { c.AllowLoopback = true })
	if s.loops == nil {
		b.Skip("no data loops on this system")
	}
	roundTrip, _ := loopRoundTrip(b, s, "udp")
	b.ReportAllocs()
	for b.Loop() {
		roundTrip()
	}
}

// loopRoundTrip sets up an allocation over network (udp or tcp) with a channel to a peer, and returns a function
// that sends 1,200 bytes of ChannelData from the client to the peer and back, and checks what arrives; and the
// allocation's relay.
func loopRoundTrip(tb testing.TB, s *Server, network string) (func(), *relayConn) {
	tb.Helper()
	c, relay, peer := bindOne(tb, s, network)
	rc := s.relayAt(net.UDPAddrFromAddrPort(relay))
	if rc == nil || rc.raw == nil {
		tb.Fatalf("the %s allocation's relay is not served by a loop", network)
	}
	frame := turnclient.AppendChannelData(nil, 0x4000, bytes.Repeat([]byte{'m'}, 1200), false)
	toPeer := make([]byte, 2048)
	toClient := make([]byte, 2048)
	payload := frame[channelHeader:]
	return func() {
		if _, err := c.Conn().Write(frame); err != nil {
			tb.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := peer.ReadFromUDPAddrPort(toPeer)
		if err != nil || !bytes.Equal(toPeer[:n], payload) || from != relay {
			tb.Fatalf("the peer got %d bytes from %v, %v", n, from, err)
		}
		if _, err := peer.WriteToUDPAddrPort(payload, relay); err != nil {
			tb.Fatal(err)
		}
		_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
		if network == "tcp" { // a stream: the frame may come in pieces
			n, err = io.ReadFull(c.Conn(), toClient[:len(frame)])
		} else {
			n, err = c.Conn().Read(toClient)
		}
		if err != nil || !bytes.Equal(toClient[:n], frame) {
			tb.Fatalf("the client got %d bytes, %v", n, err)
		}
	}, rc
}

// TestLoopBatches has peers send bursts to many relays at once, so that the loops read several datagrams per
// recvmmsg and send several per sendmmsg, with datagrams from a peer without a permission between them (dropped,
// leaving holes in the batch), and checks that every client gets exactly its own packets, in order.
func TestLoopBatches(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true })
	const clients, burst = 8, 40
	user, pass := credential(t, s, "alice", "login-1")
	type pair struct {
		c     *turnclient.Client
		relay netip.AddrPort
		peer  *net.UDPConn
	}
	var pairs []pair
	for range clients {
		c := dialTURN(t, s, "udp", user, pass)
		relay, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		peer := udpPeer(t, "127.0.0.1")
		if err := c.BindChannel(0x4000, addrOf(peer)); err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, pair{c, relay, peer})
	}
	// Every peer sends its burst before any client reads: the datagrams wait in the relay sockets together.
	stranger := udpPeer(t, "127.0.0.2") // no permission: not the IP of the bound peer
	for i, p := range pairs {
		for j := range burst {
			if j%3 == 1 {
				if _, err := stranger.WriteToUDPAddrPort([]byte("no permission"), p.relay); err != nil {
					t.Fatal(err)
				}
			}
			var b [8]byte
			binary.BigEndian.PutUint32(b[:], uint32(i))
			binary.BigEndian.PutUint32(b[4:], uint32(j))
			if _, err := p.peer.WriteToUDPAddrPort(b[:], p.relay); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, p := range pairs {
		_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for j := range burst {
			f, err := p.c.Read()
			if err != nil {
				t.Fatalf("client %d: packet %d: %v", i, j, err)
			}
			if f.Message != nil || f.Channel != 0x4000 || len(f.Data) != 8 ||
				binary.BigEndian.Uint32(f.Data) != uint32(i) || binary.BigEndian.Uint32(f.Data[4:]) != uint32(j) {
				t.Fatalf("client %d: packet %d: got channel %#x %x", i, j, f.Channel, f.Data)
			}
		}
	}
}

// FuzzLoopDatagrams sends any datagram through the loops, from an allocation's client to the listening socket and
// from its bound peer to the relay socket, each followed by a marker on the channel, and checks what arrives
// before the marker: from the client, the data of well-formed ChannelData on the bound channel and nothing else
// (but what a Send indication carries); from the peer, any datagram up to 1,596 bytes as ChannelData on the
// channel. The marker arriving shows that the loops went on.
func FuzzLoopDatagrams(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 'a', 'b', 'c', 0})
	f.Add([]byte{0x40, 0x00, 0x00, 0x09, 'a'})
	f.Add([]byte{0x40, 0x01, 0x00, 0x01, 'a'})
	f.Add([]byte{0x40, 0x00})
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add(bytes.Repeat([]byte{0x40}, 1600))
	f.Add([]byte{})
	s, _ := startServer(f, func(c *Config) { c.AllowLoopback = true })
	if s.loops == nil {
		f.Skip("no data loops on this system")
	}
	c, relay, peer := bindOne(f, s, "udp")
	marker := []byte("marker")
	markerFrame := turnclient.AppendChannelData(nil, 0x4000, marker, false)
	buf := make([]byte, 70000)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 65000 {
			return
		}
		// From the client.
		var want []byte
		if isChannelData(b) && len(b) < 1600 && binary.BigEndian.Uint16(b) == 0x4000 {
			if n := int(binary.BigEndian.Uint16(b[2:])); channelHeader+n <= len(b) {
				want = b[channelHeader : channelHeader+n]
			}
		}
		sendIndication := len(b) >= 2 && b[0] == 0x00 && b[1] == 0x16
		if _, err := c.Conn().Write(b); err != nil {
			t.Skip(err) // too long for a datagram
		}
		if _, err := c.Conn().Write(markerFrame); err != nil {
			t.Fatal(err)
		}
		got := false
		for {
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("the peer got no marker after %x: %v", b, err)
			}
			switch d := buf[:n]; {
			case bytes.Equal(d, marker) && (got || want == nil || bytes.Equal(want, marker)):
			case want != nil && !got && bytes.Equal(d, want):
				got = true
				continue
			case sendIndication:
				continue
			default:
				t.Fatalf("the peer got %x for %x", d, b)
			}
			break
		}
		if want != nil && !got && !bytes.Equal(want, marker) {
			t.Fatalf("the peer did not get %x for %x", want, b)
		}

		// From the peer.
		if _, err := peer.WriteToUDPAddrPort(b, relay); err != nil {
			t.Skip(err)
		}
		if _, err := peer.WriteToUDPAddrPort(marker, relay); err != nil {
			t.Fatal(err)
		}
		relayed := len(b) <= maxPeerDatagram
		for {
			_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Conn().Read(buf)
			if err != nil {
				t.Fatalf("the client got no marker after %x: %v", b, err)
			}
			d := buf[:n]
			if n == 0 || d[0] < 0x40 {
				continue // a STUN answer to what the client sent above
			}
			if relayed && bytes.Equal(d, turnclient.AppendChannelData(nil, 0x4000, b, false)) {
				relayed = false
				continue
			}
			if !bytes.Equal(d, markerFrame) {
				t.Fatalf("the client got %x for %x", d, b)
			}
			break
		}
		if relayed && !bytes.Equal(b, marker) {
			t.Fatalf("the client did not get %x as ChannelData", b)
		}
	})
}

// TestTCPClientThatStopsReading has a peer flood a TCP client that reads nothing: the loop writing to it must
// not block (another client's relay on the same loop keeps flowing), its backlog must stay within tcpBacklog,
// frames beyond it are dropped whole (the stream stays well-formed), and once the client reads again it gets
// what follows.
func TestTCPClientThatStopsReading(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.AllowLoopback = true
		c.UDPSockets = 1 // one loop: the stalled client's and the other client's relays share it
	})
	if s.loops == nil {
		t.Skip("no data loops on this system")
	}
	user, pass := credential(t, s, "alice", "login-1")
	stalled := dialTURN(t, s, "tcp", user, pass)
	relay, err := stalled.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := udpPeer(t, "127.0.0.1")
	if err := stalled.BindChannel(0x4000, addrOf(peer)); err != nil {
		t.Fatal(err)
	}
	rc := s.relayAt(net.UDPAddrFromAddrPort(relay))
	if rc == nil || rc.raw == nil {
		t.Fatal("the TCP allocation's relay is not served by a loop")
	}
	link := rc.link.Load()
	if link == nil || link.tcp == nil || link.tcp.lc == nil {
		t.Fatal("the TCP client's connection is not written by the loops")
	}
	w := link.tcp.lc

	media := bytes.Repeat([]byte{'m'}, 1200)
	// Flood until the client's receive buffer, the server's send buffer and the backlog are full and frames are
	// dropped.
	deadline := time.Now().Add(20 * time.Second)
	for {
		for range 64 {
			if _, err := peer.WriteToUDPAddrPort(media, relay); err != nil {
				t.Fatal(err)
			}
		}
		queued, dropped := w.backlogLen()
		if queued > tcpBacklog {
			t.Fatalf("the backlog holds %d bytes, more than %d", queued, tcpBacklog)
		}
		if dropped > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no frame dropped for the stalled client after 20 s (backlog %d bytes)", queued)
		}
	}

	// The loop is not blocked: another client's round trips through it go on, while the flood goes on too.
	other, _ := loopRoundTrip(t, s, "udp")
	for range 50 {
		if _, err := peer.WriteToUDPAddrPort(media, relay); err != nil {
			t.Fatal(err)
		}
		other()
	}
	if queued, _ := w.backlogLen(); queued > tcpBacklog {
		t.Fatalf("the backlog holds %d bytes, more than %d", queued, tcpBacklog)
	}

	// The stalled client reads again: whole frames of the flood, then a marker sent after them.
	_ = stalled.SetReadDeadline(time.Now().Add(20 * time.Second))
	frames := 0
	for {
		queued, _ := w.backlogLen()
		if queued == 0 && frames > 0 {
			break
		}
		f, err := stalled.Read()
		if err != nil {
			t.Fatalf("after %d frames: %v", frames, err)
		}
		if f.Channel != 0x4000 || !bytes.Equal(f.Data, media) {
			t.Fatalf("frame %d: channel %#x, %d bytes; want the peer's 1,200 bytes on 0x4000", frames, f.Channel, len(f.Data))
		}
		frames++
	}
	marker := []byte("marker")
	if _, err := peer.WriteToUDPAddrPort(marker, relay); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := stalled.Read()
		if err != nil {
			t.Fatalf("no marker after %d frames: %v", frames, err)
		}
		if f.Channel != 0x4000 {
			t.Fatalf("frame %d: channel %#x", frames, f.Channel)
		}
		if bytes.Equal(f.Data, marker) {
			break
		}
		if !bytes.Equal(f.Data, media) {
			t.Fatalf("frame %d: %d bytes, neither the flood's nor the marker", frames, len(f.Data))
		}
		frames++
	}
}

// TestTCPFramesInPieces sends a TCP client's ChannelData frames (of many lengths, padded) a few bytes per write,
// so that the loop reading the connection finds frames cut anywhere, and checks that the peer gets every
// payload, in order, and that a STUN request after them is still answered.
func TestTCPFramesInPieces(t *testing.T) {
	s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true })
	if s.loops == nil {
		t.Skip("no data loops on this system")
	}
	c, relay, peer := bindOne(t, s, "tcp")
	if rc := s.relayAt(net.UDPAddrFromAddrPort(relay)); rc == nil || rc.link.Load() == nil || rc.link.Load().tcp.lc == nil {
		t.Fatal("the TCP client's connection is not served by a loop")
	}
	var stream []byte
	var payloads [][]byte
	for i := range 20 {
		p := bytes.Repeat([]byte{byte('a' + i)}, 1+i*67%300)
		payloads = append(payloads, p)
		stream = turnclient.AppendChannelData(stream, 0x4000, p, true)
	}
	for off := 0; off < len(stream); off += 7 {
		if _, err := c.Conn().Write(stream[off:min(off+7, len(stream))]); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	for i, want := range payloads {
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("payload %d: got %d bytes of %q, want %d of %q", i, n, buf[:1], len(want), want[:1])
		}
	}
	if err := c.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("a Refresh after the frames: %v", err)
	}
}

// FuzzLoopTCPStream sends any bytes on a fresh TCP allocation's connection, which a loop reads, and checks the
// outcome against frameSize's rules applied in turn: a stream that is not STUN and ChannelData closes the
// connection; otherwise the peer gets the data of each ChannelData frame on the bound channel, in order, and then
// a marker sent after them (what a Send indication carries may come too).
func FuzzLoopTCPStream(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0})
	f.Add([]byte{0x40, 0x00, 0x00, 0x01, 'a', 0, 0, 0, 0x40, 0x01, 0x00, 0x00, 0x40, 0x00, 0x00, 0x02, 'b', 'c', 0, 0})
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{0x7F, 0xFF, 0x06, 0x3C})
	s, _ := startServer(f, func(c *Config) {
		c.AllowLoopback = true
		c.MaxAllocationsPerSession, c.MaxAllocationsPerAddress = -1, -1
	})
	if s.loops == nil {
		f.Skip("no data loops on this system")
	}
	user, pass := credential(f, s, "alice", "login-1")
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port()))
	marker := []byte("marker")
	buf := make([]byte, 70000)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 20000 {
			return
		}
		// What the server should make of b.
		var want [][]byte
		garbage, sendIndication, off := false, false, 0
		for off < len(b) {
			size, err := frameSize(b[off:])
			if err != nil {
				garbage = true
				break
			}
			if size == 0 {
				t.Skip("ends inside a frame: the marker would be part of it")
			}
			frame := b[off : off+size]
			switch {
			case frame[0]&0xC0 == 0x40 && binary.BigEndian.Uint16(frame) == 0x4000:
				want = append(want, frame[channelHeader:channelHeader+int(binary.BigEndian.Uint16(frame[2:]))])
			case frame[0] == 0x00 && frame[1] == 0x16:
				sendIndication = true
			}
			off += size
		}

		c, err := turnclient.Dial("tcp", server, user, pass, &turnclient.Options{RTO: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		relay, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		if err := c.BindChannel(0x4000, addrOf(peer)); err != nil {
			t.Fatal(err)
		}
		if rc := s.relayAt(net.UDPAddrFromAddrPort(relay)); rc == nil || rc.link.Load() == nil || rc.link.Load().tcp.lc == nil {
			t.Fatal("the TCP client's connection is not served by a loop")
		}
		if _, err := c.Conn().Write(b); err != nil {
			t.Fatal(err)
		}
		if garbage {
			for {
				_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Conn().Read(buf); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatalf("the server did not close the connection after %x", b)
					}
					return
				}
			}
		}
		if _, err := c.Conn().Write(turnclient.AppendChannelData(nil, 0x4000, marker, true)); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; {
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("the peer got no marker after %d of %d payloads of %x: %v", i, len(want), b, err)
			}
			d := buf[:n]
			switch {
			case i < len(want) && bytes.Equal(d, want[i]):
				i++
				continue
			case i == len(want) && bytes.Equal(d, marker):
			case sendIndication:
				continue
			default:
				t.Fatalf("the peer got %x (payload %d of %d) for %x", d, i, len(want), b)
			}
			break
		}
	})
}

// TestTCPManyFramesInOneWrite has a TCP client send, in one write, more ChannelData frames than a loop sends to
// peers in one batch, on two channels to two peers, and a peer send a burst the loop writes to the client
// several frames at a time: each side gets every payload, in order.
func TestTCPManyFramesInOneWrite(t *testing.T) {
	s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true })
	if s.loops == nil {
		t.Skip("no data loops on this system")
	}
	c, relay, peerA := bindOne(t, s, "tcp")
	peerB := udpPeer(t, "127.0.0.1")
	if err := c.BindChannel(0x4001, addrOf(peerB)); err != nil {
		t.Fatal(err)
	}
	if rc := s.relayAt(net.UDPAddrFromAddrPort(relay)); rc == nil || rc.link.Load() == nil || rc.link.Load().tcp.lc == nil {
		t.Fatal("the TCP client's connection is not served by a loop")
	}
	var stream []byte
	want := map[*net.UDPConn][][]byte{}
	for i := range 3 * loopBatch {
		peer, number := peerA, uint16(0x4000)
		if i%3 == 2 {
			peer, number = peerB, 0x4001
		}
		p := fmt.Appendf(nil, "%d:%s", i, bytes.Repeat([]byte{'x'}, i*13%200))
		want[peer] = append(want[peer], p)
		stream = turnclient.AppendChannelData(stream, number, p, true)
	}
	if _, err := c.Conn().Write(stream); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for _, peer := range []*net.UDPConn{peerA, peerB} {
		for i, p := range want[peer] {
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("payload %d of %v: %v", i, addrOf(peer), err)
			}
			if !bytes.Equal(buf[:n], p) {
				t.Fatalf("payload %d of %v: got %.12q, want %.12q", i, addrOf(peer), buf[:n], p)
			}
		}
	}

	// The other way: a burst from peer A, more than the loop reads from a relay socket at once; the client reads
	// only once the burst is sent, so that the frames wait for it together.
	var burst [][]byte
	for i := range 3 * loopBatch {
		p := fmt.Appendf(nil, "back %d:%s", i, bytes.Repeat([]byte{'y'}, i*29%300))
		burst = append(burst, p)
		if _, err := peerA.WriteToUDPAddrPort(p, relay); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, p := range burst {
		f, err := c.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Channel != 0x4000 || !bytes.Equal(f.Data, p) {
			t.Fatalf("frame %d: channel %#x, %.12q; want 0x4000, %.12q", i, f.Channel, f.Data, p)
		}
	}
	if err := c.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("a Refresh after the frames: %v", err)
	}
}
