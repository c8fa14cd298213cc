package turnserver

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"tandem/internal/certs"
	"tandem/internal/turnserver/turnclient"
)

// testCert is a self-signed certificate for localhost, 127.0.0.1 and ::1, made as tandem's LAN mode makes it,
// shared by the tests.
var testCert = sync.OnceValues(func() (*certs.SelfSigned, error) {
	dir, err := osMkdirTemp()
	if err != nil {
		return nil, err
	}
	return certs.LoadOrCreateSelfSigned(dir, certs.Hosts{
		Names: []string{"localhost"},
		IPs:   []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()},
	}, time.Now())
})

// serverTLS is the server side of testCert, as tandem hands it to the TURN server.
func serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	c, err := testCert()
	if err != nil {
		t.Fatal(err)
	}
	return c.TLSConfig()
}

// clientTLS trusts testCert only, and checks it names serverName.
func clientTLS(t testing.TB, serverName string) *tls.Config {
	t.Helper()
	c, err := testCert()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Certificate.Leaf)
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// withTLS gives a test server a TLS port of its own, on a free port.
func withTLS(t testing.TB) func(*Config) {
	return func(c *Config) {
		c.AllowLoopback = true
		c.TLS = serverTLS(t)
		c.TLSAddr = ":0"
	}
}

// newTLSClient is a pion TURN client over TLS to the TURN server at addr.
func newTLSClient(t *testing.T, addr, username, password string, cfg *tls.Config) *turnClient {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	conn := turn.NewSTUNConn(c)
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Username:       username,
		Password:       password,
		Conn:           conn,
		RTO:            200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	tc := &turnClient{Client: client, conn: conn}
	t.Cleanup(tc.close)
	return tc
}

// relayBothWays allocates through c, and sends a datagram from the relay to a peer on peerIP and back.
func relayBothWays(t *testing.T, c interface {
	Allocate() (net.PacketConn, error)
}, peerIP string) net.PacketConn {
	t.Helper()
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	peer, err := net.ListenPacket(udpNetwork(netip.MustParseAddr(peerIP)), net.JoinHostPort(peerIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	sendUntilReceived(t, relay, peer, peer.LocalAddr(), "to the peer")
	sendUntilReceived(t, peer, relay, relay.LocalAddr(), "to the client")
	return relay
}

// TestTURNOverTLS allocates through the TLS port with pion's client, checking tandem's certificate as a browser
// would, and relays both ways; then checks that the login reply lists the turns: URL.
func TestTURNOverTLS(t *testing.T) {
	t.Parallel()
	s, reg := startServer(t, withTLS(t))
	if s.TLSPort() == 0 || s.TLSPort() == s.Port() {
		t.Fatalf("TLS port %d (TURN port %d)", s.TLSPort(), s.Port())
	}
	user, pass := credential(t, s, "alice", "login-1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TLSPort()))
	c := newTLSClient(t, addr, user, pass, clientTLS(t, "127.0.0.1"))
	relay := relayBothWays(t, c, "127.0.0.1")
	if ip := relay.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("relay on %v, want 127.0.0.1", ip)
	}
	if got := metric(t, reg, "tandem_turn_tcp_connections"); got != 1 {
		t.Errorf("tcp connections = %v, want the TLS one", got)
	}

	want := "turns:127.0.0.1:" + strconv.Itoa(s.TLSPort()) + "?transport=tcp"
	servers := s.ICEServers("alice", "127.0.0.1:9090", "login-1")
	if len(servers) != 2 || !slices.Contains(servers[1].URLs, want) {
		t.Errorf("ICEServers = %+v, want %s with the credential", servers, want)
	}
	// The host a client opened the page by is the name the certificate was checked against: the turns: URL
	// keeps it, even where the other URLs name the public address.
	s2, _ := startServer(t, func(c *Config) {
		withTLS(t)(c)
		c.PublicIP = netip.MustParseAddr("203.0.113.7")
	})
	servers = s2.ICEServers("alice", "call.example.org", "login-1")
	urls := strings.Join(servers[1].URLs, " ")
	if !strings.Contains(urls, "turn:203.0.113.7:") || !strings.Contains(urls, "turns:call.example.org:"+strconv.Itoa(s2.TLSPort())+"?transport=tcp") {
		t.Errorf("URLs %s: want turn: on the public IP, turns: on the page's host", urls)
	}
}

// TestTURNOverTLSRefusesPlainAndBadHandshakes checks that the TLS port speaks only TLS: a plain TURN client gets
// no answer and the connection is closed, without disturbing a TLS client.
func TestTURNOverTLSRefusesPlain(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, withTLS(t))
	user, pass := credential(t, s, "alice", "login-1")
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.TLSPort()))
	plain, err := turnclient.Dial("tcp", server, user, pass, &turnclient.Options{RTO: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Allocate(); err == nil {
		t.Error("a plain TURN allocation on the TLS port succeeded")
	}
	c := newTLSClient(t, server.String(), user, pass, clientTLS(t, "localhost"))
	relayBothWays(t, c, "127.0.0.1")
}

// TestChannelDataOverTLS checks that tandem's own channel data path serves TURN over TLS: what a client and its
// peers receive is what they receive over TCP from pion's path, and the channel data went by tandem's path.
func TestChannelDataOverTLS(t *testing.T) {
	t.Parallel()
	transcripts := make(map[string][]string)
	for _, network := range []string{"tcp", "tls"} {
		own := network == "tls"
		s, _ := startServer(t, withTLS(t), func(s *Server) { s.channelPath = own })
		user, pass := credential(t, s, "alice", "login-1")
		port := s.Port()
		if network == "tls" {
			port = s.TLSPort()
		}
		server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
		c, err := turnclient.Dial(network, server, user, pass, &turnclient.Options{RTO: 500 * time.Millisecond, TLS: clientTLS(t, "127.0.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		x := &exchange{t: t, c: c, p1: udpPeer(t, "127.0.0.1"), p2: udpPeer(t, "127.0.0.2"), names: make(map[netip.AddrPort]string)}
		x.names[addrOf(x.p1)], x.names[addrOf(x.p2)] = "p1", "p2"
		x.script("tcp")
		transcripts[network] = x.lines
		want := uint64(0)
		if own {
			want = 2*uint64(len(sizesFor("tcp"))) + 4 + 1 + 2
		}
		if got := s.channelPacketsRelayed(); got != want {
			t.Errorf("%s: packets on tandem's channel path: %d, want %d", network, got, want)
		}
	}
	if !slices.Equal(transcripts["tls"], transcripts["tcp"]) {
		t.Errorf("TLS with tandem's channel path and TCP with pion's differ:\nTLS:\n%s\nTCP:\n%s",
			strings.Join(transcripts["tls"], "\n"), strings.Join(transcripts["tcp"], "\n"))
	}
	if !slices.Contains(transcripts["tls"], `client: channel 0x4000 "`+strings.Repeat("p", 1200)+`"`) {
		t.Error("no channel data reached the client over TLS")
	}
}

// TestTLSPortTaken checks that a TLS port in use is an error, unless it is optional: then the server runs
// without it and lists no turns: URL.
func TestTLSPortTaken(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	at := ":" + strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	s, err := New(Config{ListenAddr: "127.0.0.1:0", Secret: testSecret, TLS: serverTLS(t), TLSAddr: at})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		_ = s.Close()
		t.Fatal("Start with the TLS port taken succeeded")
	}
	opt, _ := startServer(t, func(c *Config) { c.TLS, c.TLSAddr, c.TLSOptional = serverTLS(t), at, true })
	if opt.TLSPort() != 0 {
		t.Errorf("TLS port %d, want none", opt.TLSPort())
	}
	for _, srv := range opt.ICEServers("alice", "127.0.0.1", "login-1") {
		for _, u := range srv.URLs {
			if strings.HasPrefix(u, "turns:") {
				t.Errorf("URL %s without a TLS port", u)
			}
		}
	}
	user, pass := credential(t, opt, "alice", "login-1")
	relay, err := newClient(t, opt, "udp", user, pass).Allocate()
	if err != nil {
		t.Fatalf("Allocate over UDP: %v", err)
	}
	_ = relay.Close()
}

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "turnserver-test-cert-") }
