package turnserver

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "0123456789abcdef-test-secret"

// startServer starts a Server on 127.0.0.1 with a free port, closed when the test ends.
func startServer(t testing.TB, mod func(*Config), hooks ...func(*Server)) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		ListenAddr: "127.0.0.1:0",
		Secret:     testSecret,
		Registerer: reg,
		Logger:     slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, h := range hooks {
		h(s)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, reg
}

// turnClient is a pion TURN client over UDP or TCP on 127.0.0.1.
type turnClient struct {
	*turn.Client
	conn net.PacketConn
}

// credential returns the TURN credential that ICEServers hands to user in the login session.
func credential(t testing.TB, s *Server, user, session string) (username, password string) {
	t.Helper()
	for _, srv := range s.ICEServers(user, "127.0.0.1", session) {
		if srv.Username != "" {
			return srv.Username, srv.Credential
		}
	}
	t.Fatalf("ICEServers(%q) has no TURN credential", user)
	return "", ""
}

func newClient(t *testing.T, s *Server, network, username, password string) *turnClient {
	t.Helper()
	return newClientFrom(t, s, network, "127.0.0.1", username, password)
}

// newClientFrom is newClient from the local address ip (any of 127.0.0.0/8), to be another client address.
func newClientFrom(t *testing.T, s *Server, network, ip, username, password string) *turnClient {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port()))
	var conn net.PacketConn
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Username:       username,
		Password:       password,
		Conn:           conn,
		RTO:            500 * time.Millisecond, // long enough that a loaded machine sees no retransmission (each one counts against a quota)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	tc := &turnClient{Client: c, conn: conn}
	t.Cleanup(tc.close)
	return tc
}

func (c *turnClient) close() {
	c.Client.Close()
	_ = c.conn.Close()
}

func peerSocket(t *testing.T) net.PacketConn {
	t.Helper()
	p, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func readWithin(t *testing.T, c net.PacketConn, d time.Duration) ([]byte, net.Addr, error) {
	t.Helper()
	buf := make([]byte, 1600)
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	n, from, err := c.ReadFrom(buf)
	return buf[:n], from, err
}

// metric returns the value of the gauge or counter name{labels...} in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Gauge != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRelayBetweenTwoSockets(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			s, reg := startServer(t, func(c *Config) { c.AllowLoopback = true })
			user, pass := credential(t, s, "alice", "login-1")
			c := newClient(t, s, network, user, pass)

			// STUN works without credentials.
			mapped, err := c.SendBindingRequest()
			if err != nil {
				t.Fatalf("binding request: %v", err)
			}
			if !strings.HasPrefix(mapped.String(), "127.0.0.1:") {
				t.Errorf("mapped address %v, want 127.0.0.1:*", mapped)
			}

			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			relayAddr := relay.LocalAddr().(*net.UDPAddr)
			if !relayAddr.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Errorf("relay address %v, want 127.0.0.1", relayAddr)
			}
			if got := metric(t, reg, "tandem_turn_allocations"); got != 1 {
				t.Errorf("allocations = %v, want 1", got)
			}

			peer := peerSocket(t)
			// The first send creates the permission; pion's client sends the data once it is granted.
			if _, err := relay.WriteTo([]byte("to peer"), peer.LocalAddr()); err != nil {
				t.Fatalf("relay WriteTo: %v", err)
			}
			got, from, err := readWithin(t, peer, 5*time.Second)
			if err != nil {
				t.Fatalf("peer read: %v", err)
			}
			if string(got) != "to peer" || from.String() != relayAddr.String() {
				t.Errorf("peer got %q from %v, want %q from %v", got, from, "to peer", relayAddr)
			}

			if _, err := peer.WriteTo([]byte("to client"), relayAddr); err != nil {
				t.Fatal(err)
			}
			got, from, err = readWithin(t, relay, 5*time.Second)
			if err != nil {
				t.Fatalf("relay read: %v", err)
			}
			if string(got) != "to client" || from.String() != peer.LocalAddr().String() {
				t.Errorf("client got %q from %v, want %q from %v", got, from, "to client", peer.LocalAddr())
			}

			// The relay counts a send after it returns, maybe after the peer read it.
			waitFor(t, "7 bytes counted to the peer", func() bool {
				return metric(t, reg, "tandem_turn_relayed_bytes_total", "direction", "to_peer") == 7
			})
			if got := metric(t, reg, "tandem_turn_relayed_bytes_total", "direction", "from_peer"); got != 9 {
				t.Errorf("bytes from peer = %v, want 9", got)
			}

			if err := relay.Close(); err != nil {
				t.Errorf("closing the allocation: %v", err)
			}
			waitFor(t, "the allocation to go", func() bool { return metric(t, reg, "tandem_turn_allocations") == 0 })
		})
	}
}

func TestBadCredentialsRefused(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, nil)
	good, goodPass := credential(t, s, "alice", "login-1")
	tag := s.Credentials().SessionTag("login-1")
	expired := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + ":" + tag + ":alice"
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	unknown := future + ":" + NewTag() + ":alice" // signed, but for no login this server knows
	tests := []struct {
		name, username, password, reason string
	}{
		{"expired", expired, s.Credentials().password(expired), authExpired},
		{"no user part", future + ":" + tag, s.Credentials().password(future + ":" + tag), authMalformed},
		{"empty user", future + ":" + tag + ":", s.Credentials().password(future + ":" + tag + ":"), authMalformed},
		{"no session tag", future + ":alice", s.Credentials().password(future + ":alice"), authMalformed},
		{"short session tag", future + ":abc:alice", s.Credentials().password(future + ":abc:alice"), authMalformed},
		{"no expiry", "alice", s.Credentials().password("alice"), authMalformed},
		{"expiry not a number", "soon:" + tag + ":alice", s.Credentials().password("soon:" + tag + ":alice"), authMalformed},
		{"signed expiry", "+" + future + ":" + tag + ":alice", s.Credentials().password("+" + future + ":" + tag + ":alice"), authMalformed},
		{"unknown session", unknown, s.Credentials().password(unknown), authEnded},
		{"forged password", good, "bm90IHRoZSByaWdodCBwYXNzd29yZA==", authIntegrity},
		{"password of another user", future + ":" + tag + ":mallory", goodPass, authIntegrity},
		{"signed with another secret", good, otherSecretPassword(t, good), authIntegrity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, reg, "tandem_turn_auth_failures_total", "reason", tt.reason)
			c := newClient(t, s, "udp", tt.username, tt.password)
			if relay, err := c.Allocate(); err == nil {
				_ = relay.Close()
				t.Fatalf("Allocate with %s succeeded", tt.name)
			}
			if got := metric(t, reg, "tandem_turn_auth_failures_total", "reason", tt.reason); got <= before {
				t.Errorf("auth failures{reason=%s} = %v, want > %v", tt.reason, got, before)
			}
		})
	}
	if got := metric(t, reg, "tandem_turn_allocations"); got != 0 {
		t.Errorf("allocations = %v after refused credentials, want 0", got)
	}
}

func otherSecretPassword(t *testing.T, username string) string {
	t.Helper()
	c, err := NewCredentials("another secret, just as long", 0)
	if err != nil {
		t.Fatal(err)
	}
	return c.password(username)
}

// TestDeniedPeers checks that by default a relay reaches neither loopback nor private addresses. No packet is
// sent to a non-loopback address: permissions are refused by the server before any data could be relayed.
// 127.0.0.1 is the relay's own address here, which is permitted (for relay to relay) but then only its live
// relay ports may be sent to: the data sent to an ordinary socket on it must not arrive.
func TestDeniedPeers(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, nil)
	user, pass := credential(t, s, "mallory", "login-1")
	c := newClient(t, s, "udp", user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	defer relay.Close()

	peer := peerSocket(t)
	for _, addr := range []string{
		"127.0.0.2:9", "10.1.2.3:9", "172.16.0.1:9", "192.168.1.1:9", "169.254.169.254:80",
		"100.64.0.1:9", "224.0.0.251:5353", "0.0.0.0:9", "255.255.255.255:9", "[fd00::1]:9", "[::1]:9",
		"[fe80::1]:9",
	} {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.CreatePermission(ua); err == nil {
			t.Errorf("CreatePermission(%v) succeeded, want refused", addr)
		}
	}
	// pion's client reports success once the Send indication is out; the relay must drop it.
	if _, err := relay.WriteTo([]byte("knock knock"), peer.LocalAddr()); err != nil {
		t.Logf("WriteTo a loopback peer: %v", err)
	}
	if got, _, err := readWithin(t, peer, 300*time.Millisecond); err == nil {
		t.Errorf("the loopback peer received %q through a relay that should refuse it", got)
	}
	waitFor(t, "12 denials counted", func() bool { return metric(t, reg, "tandem_turn_denied_peers_total") >= 12 })
}

// TestRelayToOwnRelay checks the one exception to the denied networks: two clients on a LAN (here loopback,
// which is denied) can talk relay to relay.
func TestRelayToOwnRelay(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, nil)
	ua, pa := credential(t, s, "alice", "login-1")
	ub, pb := credential(t, s, "bob", "login-2")
	ca, cb := newClient(t, s, "udp", ua, pa), newClient(t, s, "tcp", ub, pb)
	a, err := ca.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := cb.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Each side permits the other before data is let in, as ICE does.
	if err := ca.CreatePermission(b.LocalAddr()); err != nil {
		t.Fatalf("a permits b: %v", err)
	}
	if err := cb.CreatePermission(a.LocalAddr()); err != nil {
		t.Fatalf("b permits a: %v", err)
	}
	// Like ICE, send until it arrives: pion's client may drop the first ChannelData that races its channel binding.
	sendUntilReceived(t, b, a, a.LocalAddr(), "hi a")
	sendUntilReceived(t, a, b, b.LocalAddr(), "hi b")
}

func sendUntilReceived(t *testing.T, from, to net.PacketConn, toAddr net.Addr, msg string) {
	t.Helper()
	for range 50 {
		if _, err := from.WriteTo([]byte(msg), toAddr); err != nil {
			t.Fatalf("WriteTo %v: %v", toAddr, err)
		}
		got, _, err := readWithin(t, to, 100*time.Millisecond)
		if err == nil && string(got) == msg {
			return
		}
	}
	t.Fatalf("%q never arrived at %v", msg, toAddr)
}

// fakeClock is a settable clock for the credential tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestExpiredCredentialKeepsRunningAllocation checks that a credential that expires during a call does not cut
// the call, while it can start no new allocation.
func TestExpiredCredentialKeepsRunningAllocation(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now()}
	s, _ := startServer(t, func(c *Config) { c.AllowLoopback = true; c.CredentialTTL = time.Minute },
		func(s *Server) { s.now = clock.now })
	user, pass := credential(t, s, "alice", "login-1")
	c := newClient(t, s, "udp", user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	clock.advance(2 * time.Minute)

	peer := peerSocket(t)
	if err := c.CreatePermission(peer.LocalAddr()); err != nil {
		t.Fatalf("CreatePermission on a running allocation after expiry: %v", err)
	}
	if _, err := relay.WriteTo([]byte("still here"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := readWithin(t, peer, 5*time.Second); err != nil || string(got) != "still here" {
		t.Fatalf("peer read %q, %v", got, err)
	}

	late := newClient(t, s, "udp", user, pass)
	if r, err := late.Allocate(); err == nil {
		_ = r.Close()
		t.Fatal("a new allocation with an expired credential succeeded")
	}
}

func TestICEServers(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, func(c *Config) {
		c.External = []string{"turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349?transport=tcp"}
	})
	port := strconv.Itoa(s.Port())
	tests := []struct {
		host, want string
	}{
		{"192.168.1.5:9090", "192.168.1.5"},
		{"192.168.1.5", "192.168.1.5"},
		{"tandem.example.org:443", "tandem.example.org"},
		{"myhost.local", "myhost.local"},
		{"localhost:9090", "127.0.0.1"},
		{"[::1]:9090", "127.0.0.1"},
		{"[2001:db8::1]:9090", "127.0.0.1"}, // unusable: the listening address instead
		{"", "127.0.0.1"},
		{"evil.com/?x=", "127.0.0.1"},
	}
	for _, tt := range tests {
		servers := s.ICEServers("alice", tt.host, "login-1")
		if len(servers) != 3 {
			t.Fatalf("ICEServers(%q) = %+v, want 3 entries", tt.host, servers)
		}
		hp := net.JoinHostPort(tt.want, port)
		wantURLs := [][]string{
			{"stun:" + hp},
			{"turn:" + hp + "?transport=udp", "turn:" + hp + "?transport=tcp"},
			{"turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349?transport=tcp"},
		}
		for i, srv := range servers {
			if fmt.Sprint(srv.URLs) != fmt.Sprint(wantURLs[i]) {
				t.Errorf("ICEServers(%q)[%d].URLs = %v, want %v", tt.host, i, srv.URLs, wantURLs[i])
			}
		}
		if servers[0].Username != "" || servers[0].Credential != "" {
			t.Errorf("the STUN entry has credentials")
		}
		turnSrv, ext := servers[1], servers[2]
		if turnSrv.Username != ext.Username || turnSrv.Credential != ext.Credential {
			t.Errorf("embedded and external credentials differ")
		}
		exp, tag, user, err := parseUsername(turnSrv.Username)
		if err != nil || user != "alice" || tag != s.Credentials().SessionTag("login-1") {
			t.Errorf("username %q: user %q, tag %q, %v", turnSrv.Username, user, tag, err)
		}
		if d := time.Until(exp); d < DefaultCredentialTTL-time.Minute || d > DefaultCredentialTTL+time.Minute {
			t.Errorf("credential expires in %v, want about %v", d, DefaultCredentialTTL)
		}
		if pw, _, err := s.Credentials().check(turnSrv.Username); err != nil || pw != turnSrv.Credential {
			t.Errorf("the minted credential does not check: %v", err)
		}
	}
}

func TestICEServersConfiguredHost(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, func(c *Config) { c.PublicIP = netip.MustParseAddr("203.0.113.7") })
	servers := s.ICEServers("bob", "192.168.1.5:9090", "login-1")
	want := "stun:203.0.113.7:" + strconv.Itoa(s.Port())
	if len(servers) != 2 || servers[0].URLs[0] != want {
		t.Errorf("ICEServers = %+v, want %s first", servers, want)
	}
}

func TestExternalOnly(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Secret: testSecret, ExternalOnly: true, External: []string{"turn:coturn.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	servers := s.ICEServers("carol", "example.net", "login-1")
	if len(servers) != 1 || servers[0].URLs[0] != "turn:coturn.example.net" || servers[0].Credential == "" {
		t.Errorf("ICEServers = %+v, want only the external server, with a credential", servers)
	}
	if s.Port() != 0 {
		t.Errorf("an external-only server listens on port %d", s.Port())
	}
}

func TestCredentialsCompatibleWithPion(t *testing.T) {
	t.Parallel()
	// pion's TURN REST API handler computes the same password from the same secret: coturn's scheme.
	c, err := NewCredentials(testSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	user, pass := c.Mint(c.SessionTag("login-1"), "dave")
	key, ok := turn.LongTermTURNRESTAuthHandler(testSecret, nil)(user, "tandem", nil)
	if !ok || !bytes.Equal(key, turn.GenerateAuthKey(user, "tandem", pass)) {
		t.Error("the minted credential does not match pion's TURN REST API scheme")
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	bad := map[string]Config{
		"no secret":               {},
		"short secret":            {Secret: "short"},
		"bad listen address":      {Secret: testSecret, ListenAddr: "nowhere"},
		"host name":               {Secret: testSecret, ListenAddr: "example.com:3478"},
		"IPv6 listen, IPv4 relay": {Secret: testSecret, ListenAddr: "[::1]:3478", RelayAddress: netip.MustParseAddr("127.0.0.1")},
		"zone in listen address":  {Secret: testSecret, ListenAddr: "[fe80::1%lo]:3478"},
		"TLS port without TLS":    {Secret: testSecret, TLSAddr: ":5349"},
		"shared port without TLS": {Secret: testSecret, SharedTLSPort: 443},
		"bad port":                {Secret: testSecret, ListenAddr: ":99999"},
		"negative TTL":            {Secret: testSecret, CredentialTTL: -time.Second},
		"IPv6 public IP":          {Secret: testSecret, PublicIP: netip.MustParseAddr("2001:db8::1")},
		"unspecified relay":       {Secret: testSecret, RelayAddress: netip.IPv4Unspecified()},
		"half a port range":       {Secret: testSecret, RelayMinPort: 50000},
		"inverted port range":     {Secret: testSecret, RelayMinPort: 50010, RelayMaxPort: 50000},
		"bad host":                {Secret: testSecret, Host: "a b"},
		"bad external":            {Secret: testSecret, External: []string{"http://example.com"}},
		"bad external transport":  {Secret: testSecret, External: []string{"turn:example.com?transport=sctp"}},
		"external only, no URLs":  {Secret: testSecret, ExternalOnly: true},
		"invalid allowed prefix":  {Secret: testSecret, AllowedPeers: []netip.Prefix{{}}},
	}
	for name, cfg := range bad {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	s, err := New(Config{Secret: testSecret})
	if err != nil {
		t.Fatalf("New with only a secret: %v", err)
	}
	if s.cfg.ListenAddr != ":3478" || s.cfg.Realm != "tandem" || s.creds.TTL() != DefaultCredentialTTL {
		t.Errorf("defaults: %+v", s.cfg)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
}

func TestPortTaken(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, nil)
	other, err := New(Config{Secret: testSecret, ListenAddr: "127.0.0.1:" + strconv.Itoa(s.Port())})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err == nil {
		_ = other.Close()
		t.Fatal("Start on a taken port succeeded")
	}
}

// TestRelayPortRange checks that relays take their ports from the range, that an allocation beyond a full range
// fails, and that its quota is given back: the address that was refused gets the port once it is free.
func TestRelayPortRange(t *testing.T) {
	t.Parallel()
	port, _ := freePortRange(t, 1)
	s, reg := startServer(t, func(c *Config) { c.RelayMinPort, c.RelayMaxPort, c.MaxRelayShare = port, port, 100 })
	user, pass := credential(t, s, "alice", "login-1")
	relay, err := newClient(t, s, "udp", user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if got := relay.LocalAddr().(*net.UDPAddr).Port; got != int(port) {
		t.Errorf("relay port %d, want %d", got, port)
	}
	ub, pb := credential(t, s, "bob", "login-2")
	for range 3 {
		mustNotAllocate(t, s, "udp", "127.0.0.2", ub, pb, "an allocation beyond a full port range")
		// pion sends the error response before it reports the failure (OnAllocationError), which gives the
		// reservation back; with a read loop per core the next attempt can be read before that.
		waitFor(t, "the refused allocation's reservation to be given back", func() bool {
			s.amu.Lock()
			defer s.amu.Unlock()
			return len(s.pending) == 0
		})
	}
	if got := metric(t, reg, "tandem_turn_limited_total", "limit", limitAddress); got != 0 {
		t.Errorf("limited{address} = %v: bob was refused for his quota, not for the full range", got)
	}
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the port to be free", func() bool { return metric(t, reg, "tandem_turn_allocations") == 0 })
	mustAllocate(t, s, "udp", "127.0.0.2", ub, pb, "bob's allocation once the port is free")
}

// TestPeerFilter checks that the TURN configuration reaches the peer address policy (internal/netaddr, whose
// TestPeerPolicy checks the policy itself, range by range): the defaults, -turn-allow-loopback, and the operator's
// allowed and denied networks.
func TestPeerFilter(t *testing.T) {
	t.Parallel()
	def := newPeerFilter(&Config{})
	withLoop := newPeerFilter(&Config{AllowLoopback: true})
	custom := newPeerFilter(&Config{
		AllowedPeers: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		DeniedPeers:  []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("8.8.8.0/24")},
	})
	tests := []struct {
		ip                    string
		def, withLoop, custom bool
	}{
		{"8.8.8.8", true, true, false},
		{"1.1.1.1", true, true, true},
		{"127.0.0.1", false, true, false},
		{"::1", false, true, false},
		{"10.1.2.3", false, false, true},
		{"10.9.1.1", false, false, false},
		{"192.168.0.1", false, false, false},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		for _, c := range []struct {
			name string
			f    peerFilter
			want bool
		}{{"default", def, tt.def}, {"loopback allowed", withLoop, tt.withLoop}, {"custom", custom, tt.custom}} {
			if got := c.f.allows(ip); got != c.want {
				t.Errorf("%s: allows(%s) = %v, want %v", c.name, tt.ip, got, c.want)
			}
		}
	}
}

func TestMetricsRegisterTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Secret: testSecret, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{Secret: testSecret, Registerer: reg})
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second registration: %v, want AlreadyRegisteredError", err)
	}
}

// TestListenOnEveryAddress checks the LAN mode: listening on every interface address, an allocation relays on the
// address its client reached.
func TestListenOnEveryAddress(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, func(c *Config) { c.ListenAddr = ":0" })
	if s.Port() == 0 {
		t.Fatal("no port")
	}
	user, pass := credential(t, s, "alice", "login-1")
	relay, err := newClient(t, s, "udp", user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	if ip := relay.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("relay on %v, want 127.0.0.1, the address the client reached", ip)
	}
	for _, srv := range s.ICEServers("alice", "", "login-1") {
		for _, u := range srv.URLs {
			if strings.Contains(u, "0.0.0.0") {
				t.Errorf("URL %s names the unspecified address", u)
			}
		}
	}
}
