package turnserver

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// allocate makes an allocation with a new client at ip, closed when the test ends.
func allocate(t *testing.T, s *Server, network, ip, username, password string) (net.PacketConn, error) {
	t.Helper()
	relay, err := newClientFrom(t, s, network, ip, username, password).Allocate()
	if err == nil {
		t.Cleanup(func() { _ = relay.Close() })
	}
	return relay, err
}

func mustAllocate(t *testing.T, s *Server, network, ip, username, password, what string) net.PacketConn {
	t.Helper()
	relay, err := allocate(t, s, network, ip, username, password)
	if err != nil {
		t.Fatalf("%s: Allocate: %v", what, err)
	}
	return relay
}

func mustNotAllocate(t *testing.T, s *Server, network, ip, username, password, what string) {
	t.Helper()
	if _, err := allocate(t, s, network, ip, username, password); err == nil {
		t.Fatalf("%s: Allocate succeeded, want refused", what)
	}
}

// TestRenameGetsNoMoreAllocations checks that a login is held to its quota, and that logging in again under
// another name (which ends the login, as the hub does on a rename) gives the same client address no more than its
// own quota: the old login's allocations still count.
func TestRenameGetsNoMoreAllocations(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, func(c *Config) {
		c.MaxAllocationsPerSession = 2
		c.MaxAllocationsPerAddress = 3
	})
	ua, pa := credential(t, s, "alice", "login-1")
	mustAllocate(t, s, "udp", "127.0.0.1", ua, pa, "alice's first")
	mustAllocate(t, s, "tcp", "127.0.0.1", ua, pa, "alice's second")
	mustNotAllocate(t, s, "udp", "127.0.0.1", ua, pa, "alice's third, over the login's quota")
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitSession); got != 1 {
		t.Errorf("limited{session} = %v, want 1", got)
	}

	s.EndSession("login-1") // renamed
	ub, pb := credential(t, s, "bob", "login-2")
	mustAllocate(t, s, "udp", "127.0.0.1", ub, pb, "bob's first")
	mustNotAllocate(t, s, "udp", "127.0.0.1", ub, pb, "bob's second, over the address's quota")
	s.EndSession("login-2")
	uc, pc := credential(t, s, "carol", "login-3")
	mustNotAllocate(t, s, "udp", "127.0.0.1", uc, pc, "carol's first, over the address's quota")
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitAddress); got != 2 {
		t.Errorf("limited{address} = %v, want 2", got)
	}

	// Another client address is not held to the first one's quota.
	ud, pd := credential(t, s, "dave", "login-4")
	mustAllocate(t, s, "udp", "127.0.0.2", ud, pd, "dave's, from another address")
	if got := metric(t, reg, "tandem_turn_allocations"); got != 4 {
		t.Errorf("allocations = %v, want 4", got)
	}
}

// TestEndedSessionCannotAllocate checks that once a login has ended its credential starts no allocation, while
// the allocation it made goes on: permissions, data, and the refresh that ends it.
func TestEndedSessionCannotAllocate(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, func(c *Config) { c.AllowLoopback = true })
	user, pass := credential(t, s, "alice", "login-1")
	c := newClient(t, s, "udp", user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	s.EndSession("login-1") // the login's connection closed

	mustNotAllocate(t, s, "udp", "127.0.0.1", user, pass, "a new allocation with the ended login's credential")
	mustNotAllocate(t, s, "tcp", "127.0.0.1", user, pass, "a new TCP allocation with the ended login's credential")
	if got := metric(t, reg, "tandem_turn_auth_failures_total", "reason", authEnded); got < 2 {
		t.Errorf("auth failures{ended} = %v, want at least 2", got)
	}

	peer := peerSocket(t)
	if err := c.CreatePermission(peer.LocalAddr()); err != nil {
		t.Fatalf("CreatePermission on the live allocation: %v", err)
	}
	if _, err := relay.WriteTo([]byte("still here"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := readWithin(t, peer, 5*time.Second); err != nil || string(got) != "still here" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	// Closing sends a Refresh with a lifetime of zero: accepted, it ends the allocation at once (refused, the
	// allocation would stay until its lifetime ran out).
	if err := relay.Close(); err != nil {
		t.Fatalf("closing the allocation: %v", err)
	}
	waitFor(t, "the allocation to be refreshed away", func() bool { return metric(t, reg, "tandem_turn_allocations") == 0 })

	// The session is forgotten once its last allocation is gone (pion reports the deletion just after it closed
	// the relay socket, which the metric counts), and a new login works.
	waitFor(t, "the ended session to be forgotten", func() bool {
		s.amu.Lock()
		defer s.amu.Unlock()
		return len(s.sessions) == 0
	})
	u2, p2 := credential(t, s, "alice", "login-2")
	mustAllocate(t, s, "udp", "127.0.0.1", u2, p2, "the next login")
}

// TestSessionsBounded checks that the server forgets the logins whose credentials have expired.
func TestSessionsBounded(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now()}
	s, _ := startServer(t, func(c *Config) { c.CredentialTTL = time.Minute }, func(s *Server) { s.now = clock.now })
	for i := range 3 * minSessionSweep {
		if i == minSessionSweep {
			clock.advance(2 * time.Minute)
		}
		s.ICEServers("user", "127.0.0.1", "") // a login that never ends
	}
	s.amu.Lock()
	n := len(s.sessions)
	s.amu.Unlock()
	if n > 2*minSessionSweep {
		t.Errorf("%d sessions kept, want at most %d: the expired ones are not dropped", n, 2*minSessionSweep)
	}
}

// freePortRange returns n consecutive UDP ports on 127.0.0.1 that are free now, below the kernel's ephemeral
// range, so that no other test's sockets take them meanwhile.
func freePortRange(t *testing.T, n int) (lo, hi uint16) {
	t.Helper()
try:
	for range 100 {
		base := 20000 + rand.IntN(10000)
		for p := base; p < base+n; p++ {
			c, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				continue try
			}
			_ = c.Close()
		}
		return uint16(base), uint16(base + n - 1)
	}
	t.Fatal("no free port range")
	return 0, 0
}

// TestAddressShareOfRelayPorts checks that one client address cannot take every port of the relay range: it gets
// its share, and another address still gets a relay.
func TestAddressShareOfRelayPorts(t *testing.T) {
	t.Parallel()
	lo, hi := freePortRange(t, 8)
	s, reg := startServer(t, func(c *Config) {
		c.RelayMinPort, c.RelayMaxPort = lo, hi
		c.MaxRelayShare = 50
	})
	for i := range 4 {
		u, p := credential(t, s, "mallory", "login-"+strconv.Itoa(i)) // one login per allocation, under its cap
		mustAllocate(t, s, "udp", "127.0.0.1", u, p, "mallory's allocation "+strconv.Itoa(i+1))
	}
	u, p := credential(t, s, "mallory", "login-4")
	mustNotAllocate(t, s, "udp", "127.0.0.1", u, p, "mallory's fifth allocation, over half the range")
	mustNotAllocate(t, s, "tcp", "127.0.0.1", u, p, "mallory's fifth allocation over TCP")

	ua, pa := credential(t, s, "alice", "login-5")
	relay := mustAllocate(t, s, "udp", "127.0.0.2", ua, pa, "alice's allocation from another address")
	if port := relay.LocalAddr().(*net.UDPAddr).Port; port < int(lo) || port > int(hi) {
		t.Errorf("relay port %d outside %d-%d", port, lo, hi)
	}
	if got := metric(t, reg, "tandem_turn_allocations"); got != 5 {
		t.Errorf("allocations = %v, want 5", got)
	}
}

// TestPermissionRequestsPaced checks that an allocation cannot make the server hold a permission for every
// address it names: its permission and channel requests are paced.
func TestPermissionRequestsPaced(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now()}
	s, reg := startServer(t, func(c *Config) { c.AllowLoopback = true }, func(s *Server) { s.now = clock.now })
	user, pass := credential(t, s, "mallory", "login-1")
	c := newClient(t, s, "udp", user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	peer := func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 1, byte(i>>8), byte(i)), Port: 9} }
	for i := range permissionBurst {
		if err := c.CreatePermission(peer(i)); err != nil {
			t.Fatalf("permission %d: %v", i+1, err)
		}
	}
	if err := c.CreatePermission(peer(permissionBurst)); err == nil {
		t.Fatalf("permission %d succeeded at once, want refused", permissionBurst+1)
	}
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitPermissions); got != 1 {
		t.Errorf("limited{permissions} = %v, want 1", got)
	}
	clock.advance(permissionInterval)
	if err := c.CreatePermission(peer(permissionBurst)); err != nil {
		t.Fatalf("a permission after %v: %v", permissionInterval, err)
	}
}

// TestEvenPortRefused checks that an Allocate asking for an even port is refused before pion looks for one (and
// keeps a reservation for it): over UDP with 420 (Unknown Attribute), over TCP with 508 (no such relay).
func TestEvenPortRefused(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, nil)
	user, pass := credential(t, s, "mallory", "login-1")
	for _, network := range []string{"udp", "tcp"} {
		conn, err := net.Dial(network, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		request := func(extra ...stun.Setter) *stun.Message {
			t.Helper()
			setters := append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
				stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}},
				stun.RawAttribute{Type: attrEvenPort, Value: []byte{0x80}}}, extra...)
			if _, err := conn.Write(stun.MustBuild(setters...).Raw); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("%s: reading the response: %v", network, err)
			}
			m := &stun.Message{Raw: buf[:n]}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			return m
		}
		var code stun.ErrorCodeAttribute
		m := request()
		if network == "tcp" { // first the challenge, then the signed request
			var nonce stun.Nonce
			var realm stun.Realm
			if err := nonce.GetFrom(m); err != nil {
				t.Fatalf("no nonce in %v", m)
			}
			_ = realm.GetFrom(m)
			m = request(stun.NewUsername(user), realm, nonce,
				stun.NewLongTermIntegrity(user, realm.String(), pass), stun.Fingerprint)
		}
		if err := code.GetFrom(m); err != nil || m.Type.Class != stun.ClassErrorResponse {
			t.Fatalf("%s: response %v, want an error", network, m)
		}
		want := map[string]stun.ErrorCode{"udp": stun.CodeUnknownAttribute, "tcp": stun.CodeInsufficientCapacity}[network]
		if code.Code != want {
			t.Errorf("%s: error %d, want %d", network, code.Code, want)
		}
	}
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitEvenPort); got != 1 {
		t.Errorf("limited{even_port} = %v, want 1", got)
	}
	if got := metric(t, reg, "tandem_turn_allocations"); got != 0 {
		t.Errorf("allocations = %v, want 0", got)
	}
}

// dialTCP opens a raw TCP connection to the server from ip.
func dialTCP(t *testing.T, s *Server, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refusedAtOnce dials the server from ip and checks that the connection is closed at once: the dial itself may see
// the reset.
func refusedAtOnce(t *testing.T, s *Server, ip, what string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v", what, err)
		}
		return
	}
	defer c.Close()
	closedWithin(t, c, 5*time.Second, what)
}

// closedWithin reports how long the server took to close c, failing the test if it did not within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 1500)
	for {
		_, err := c.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			continue // an answer to what was sent
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("%s: still open after %v", what, d)
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err):
			return time.Since(start)
		default:
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// stillOpen fails the test if the server closed c.
func stillOpen(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: closed (%v), want open", what, err)
	}
}

// TestIdleTCPConnectionClosed checks that a TCP connection that makes no allocation is closed after the idle
// timeout, whether it is silent or only asks for its address, and so is one whose allocation has ended; one with
// an allocation stays.
func TestIdleTCPConnectionClosed(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	s, reg := startServer(t, func(c *Config) { c.TCPIdleTimeout = idle; c.AllowLoopback = true })

	silent := dialTCP(t, s, "127.0.0.1")
	if d := closedWithin(t, silent, idle+5*time.Second, "a silent connection"); d > idle+2*time.Second {
		t.Errorf("a silent connection closed after %v, want about %v", d, idle)
	}

	binding := dialTCP(t, s, "127.0.0.1")
	if _, err := binding.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, binding, idle+5*time.Second, "a connection that only sent a binding request")

	user, pass := credential(t, s, "alice", "login-1")
	c := newClient(t, s, "tcp", user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	// Three idle timeouts later the allocated connection still relays.
	waitFor(t, "the idle connections to be counted", func() bool {
		return metric(t, reg, "tandem_turn_limited_total", "limit", limitTCPIdle) >= 2
	})
	deadline := time.Now().Add(3 * idle)
	for time.Now().Before(deadline) {
		time.Sleep(idle / 3) // nothing to await: the test is that nothing happens
	}
	peer := peerSocket(t)
	if _, err := relay.WriteTo([]byte("hello"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := readWithin(t, peer, 5*time.Second); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v after %v: the allocated connection was dropped", got, err, 3*idle)
	}
	if got := metric(t, reg, "tandem_turn_tcp_connections"); got != 1 {
		t.Errorf("TCP connections = %v, want 1", got)
	}

	// Once its allocation is gone, the connection is dropped too.
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection without its allocation to be closed", func() bool {
		return metric(t, reg, "tandem_turn_tcp_connections") == 0
	})
}

// TestTCPConnectionCaps checks that TCP connections over the per-address or the total cap are closed at once,
// while an ordinary client from another address still allocates.
func TestTCPConnectionCaps(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, func(c *Config) {
		c.MaxTCPConns = 4
		c.MaxTCPConnsPerAddress = 2
		c.TCPIdleTimeout = time.Minute
	})
	open := func(n float64) {
		t.Helper()
		waitFor(t, "the connections to be accepted", func() bool { return metric(t, reg, "tandem_turn_tcp_connections") == n })
	}
	a1, a2 := dialTCP(t, s, "127.0.0.2"), dialTCP(t, s, "127.0.0.2")
	open(2)
	refusedAtOnce(t, s, "127.0.0.2", "a third connection from one address")
	stillOpen(t, a1, "the first connection")
	stillOpen(t, a2, "the second connection")
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitTCPAddress); got != 1 {
		t.Errorf("limited{tcp_conns_addr} = %v, want 1", got)
	}

	dialTCP(t, s, "127.0.0.3")
	open(3)
	user, pass := credential(t, s, "alice", "login-1")
	mustAllocate(t, s, "tcp", "127.0.0.1", user, pass, "an ordinary client's TCP allocation")
	open(4)
	refusedAtOnce(t, s, "127.0.0.4", "a connection over the total cap")
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitTCPConns); got != 1 {
		t.Errorf("limited{tcp_conns} = %v, want 1", got)
	}
	mustAllocate(t, s, "udp", "127.0.0.1", user, pass, "an ordinary client's UDP allocation")
}

// TestTCPGarbageClosed checks that a TCP connection that sends something other than STUN or ChannelData, or a
// frame longer than any the server handles, is closed at once rather than after the idle timeout.
func TestTCPGarbageClosed(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, func(c *Config) { c.TCPIdleTimeout = time.Minute })
	oversize := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	oversize[2], oversize[3] = 0xFF, 0xF0 // a STUN header announcing 65,520 bytes
	for name, data := range map[string][]byte{
		"an HTTP request":          []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
		"a TLS client hello":       {0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03},
		"a byte of garbage":        {0xff},
		"an oversized STUN frame":  oversize,
		"an oversized ChannelData": {0x40, 0x00, 0x10, 0x00, 1, 2, 3, 4},
	} {
		c := dialTCP(t, s, "127.0.0.1")
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, c, 5*time.Second, name)
	}
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitTCPGarbage); got != 5 {
		t.Errorf("limited{tcp_garbage} = %v, want 5", got)
	}

	// A well-framed stream, split anywhere, is not garbage.
	c := dialTCP(t, s, "127.0.0.1")
	msg := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	for i := range msg {
		if _, err := c.Write(msg[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("a binding request sent a byte at a time: %v", err)
	}
	if resp := (&stun.Message{Raw: buf[:n]}); resp.Decode() != nil || resp.Type != stun.BindingSuccess {
		t.Errorf("response %v, want a binding success", resp)
	}
}

// BenchmarkTCPFrameScan measures what checking the framing of a TCP connection costs per relayed frame: the
// stream of 1,200-byte ChannelData frames a video call sends, cut into frames as a connection's Read does.
func BenchmarkTCPFrameScan(b *testing.B) {
	frame := make([]byte, 4+1200)
	frame[0], frame[1], frame[2], frame[3] = 0x40, 0x00, 1200>>8, 1200&0xff
	stream := make([]byte, 0, 100*len(frame))
	for range 100 {
		stream = append(stream, frame...)
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for p := stream; len(p) > 0; {
			n, err := frameSize(p)
			if err != nil || n == 0 {
				b.Fatal(n, err)
			}
			p = p[n:]
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/frame")
}
