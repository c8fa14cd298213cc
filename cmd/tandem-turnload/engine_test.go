package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tandem/internal/turnserver"
	"tandem/internal/turnserver/turnclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// engines are the data paths this system has.
func engines() []string {
	if runtime.GOOS == "linux" {
		return []string{"loops", "goroutines"}
	}
	return []string{"goroutines"}
}

func start(t *testing.T, c *config, eps []*endpoint) engine {
	t.Helper()
	if c.engine == "goroutines" {
		return startGoroutines(c, eps)
	}
	eng, err := startLoops(c, eps)
	if err != nil {
		t.Fatalf("startLoops: %v", err)
	}
	return eng
}

// waitUntil polls cond until it holds, failing the test after 20 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle stops eng's sending and waits until what was sent has arrived (or is reported as not as sent), then
// returns the final counts.
func settle(t *testing.T, eng engine, accounted func(sent, delivered uint64, f faultCounts) bool) (sent, delivered uint64, f faultCounts) {
	t.Helper()
	eng.stopSending()
	waitUntil(t, "every packet sent is accounted for", func() bool {
		sent, delivered = eng.counts()
		f = eng.faults()
		return accounted(sent, delivered, f)
	})
	return sent, delivered, f
}

func allDelivered(sent, delivered uint64, _ faultCounts) bool { return delivered == sent }

// TestEnginesThroughTandem relays calls through a real TURN server (tandem's, on 127.0.0.1) with each engine,
// over UDP and TCP, paced and saturating: every packet sent is delivered, once, as sent.
func TestEnginesThroughTandem(t *testing.T) {
	s, err := turnserver.New(turnserver.Config{
		ListenAddr: "127.0.0.1:0", Secret: "turnload-test-secret-0123456789", AllowLoopback: true,
		MaxAllocationsPerSession: -1, MaxAllocationsPerAddress: -1, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var username, password string
	for _, srv := range s.ICEServers("turnload", "127.0.0.1", "session") {
		if srv.Username != "" {
			username, password = srv.Username, srv.Credential
		}
	}
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port()))
	for _, engineName := range engines() {
		for _, transport := range []string{"udp", "tcp"} {
			for _, rate := range []int{0, 500} {
				name := engineName + "/" + transport + "/saturating"
				if rate > 0 {
					name = engineName + "/" + transport + "/paced"
				}
				t.Run(name, func(t *testing.T) {
					c := &config{transport: transport, calls: 3, rate: rate, window: 8, size: 1200, engine: engineName, loops: 2}
					eps, err := setUp(context.Background(), c, server, username, password)
					defer func() {
						for _, e := range eps {
							_ = e.c.Close()
						}
					}()
					if err != nil {
						t.Fatal(err)
					}
					eng := start(t, c, eps)
					defer eng.close()
					waitUntil(t, "3,000 packets are delivered", func() bool {
						_, d := eng.counts()
						return d >= 3000
					})
					sent, delivered, f := settle(t, eng, allDelivered)
					if f != (faultCounts{}) || delivered != sent {
						t.Errorf("sent %d, delivered %d, faults %+v: want every packet delivered as sent", sent, delivered, f)
					}
				})
			}
		}
	}
}

// middlebox stands in for a TURN server's data path between two UDP clients: what one sends, it passes to the
// other through that direction's mangle, which returns the datagrams to pass on.
type middlebox struct {
	conn     *net.UDPConn
	a, b     netip.AddrPort
	toA, toB func(p []byte) [][]byte
	done     chan struct{}
}

func newMiddlebox(t *testing.T, mangler func() func(p []byte) [][]byte) *middlebox {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	return &middlebox{conn: conn, toA: mangler(), toB: mangler(), done: make(chan struct{})}
}

func (m *middlebox) addr() netip.AddrPort { return m.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (m *middlebox) run() {
	defer close(m.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		to, mangle := m.a, m.toA
		if from == m.a {
			to, mangle = m.b, m.toB
		}
		for _, p := range mangle(buf[:n]) {
			_, _ = m.conn.WriteToUDPAddrPort(p, to)
		}
	}
}

func (m *middlebox) close() {
	_ = m.conn.Close()
	<-m.done
}

// udpPair dials two clients of one call through m.
func udpPair(t *testing.T, m *middlebox) []*endpoint {
	t.Helper()
	var eps []*endpoint
	for range 2 {
		tc, err := turnclient.Dial("udp", m.addr(), "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, &endpoint{c: tc})
	}
	eps[0].peer, eps[1].peer = eps[1], eps[0]
	m.a, m.b = eps[0].c.LocalAddr(), eps[1].c.LocalAddr()
	return eps
}

// TestLoopEngineCountsOnlyIntactPackets has the loop engine relay through a middlebox that loses, duplicates,
// reorders or corrupts packets: none of those count as delivered, so a server that did that would not look
// better than one that relays faithfully.
func TestLoopEngineCountsOnlyIntactPackets(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the loop engine is Linux's")
	}
	// each makes a mangler from a function of a direction's datagram count (from 1) and the datagram.
	each := func(f func(n int, p []byte) [][]byte) func() func([]byte) [][]byte {
		return func() func([]byte) [][]byte {
			n := 0
			return func(p []byte) [][]byte { n++; return f(n, p) }
		}
	}
	cases := []struct {
		name    string
		mangler func() func(p []byte) [][]byte // makes the mangle of one direction
		done    func(sent, delivered uint64, f faultCounts) bool
		check   func(t *testing.T, sent, delivered uint64, f faultCounts)
	}{
		{
			name:    "faithful",
			mangler: each(func(_ int, p []byte) [][]byte { return [][]byte{p} }),
			done:    allDelivered,
			check: func(t *testing.T, sent, delivered uint64, f faultCounts) {
				if f != (faultCounts{}) {
					t.Errorf("faults %+v through a faithful relay", f)
				}
			},
		},
		{
			name:    "duplicating",
			mangler: each(func(_ int, p []byte) [][]byte { return [][]byte{p, p} }),
			done:    func(sent, _ uint64, f faultCounts) bool { return f.outOfOrder == sent },
			check: func(t *testing.T, sent, delivered uint64, f faultCounts) {
				if delivered != sent || f.corrupt != 0 {
					t.Errorf("sent %d, delivered %d, faults %+v: want each delivered once, each copy out of order", sent, delivered, f)
				}
			},
		},
		{
			name: "dropping every other",
			mangler: each(func(n int, p []byte) [][]byte {
				if n%2 == 0 {
					return nil
				}
				return [][]byte{p}
			}),
			done: func(sent, delivered uint64, _ faultCounts) bool { return delivered+2 >= sent/2 },
			check: func(t *testing.T, sent, delivered uint64, f faultCounts) {
				if delivered > sent/2+2 || f != (faultCounts{}) {
					t.Errorf("sent %d, delivered %d, faults %+v: want half delivered", sent, delivered, f)
				}
			},
		},
		{
			name: "corrupting the data",
			mangler: each(func(_ int, p []byte) [][]byte {
				q := append([]byte(nil), p...)
				q[len(q)-1] ^= 1
				return [][]byte{q}
			}),
			done: func(sent, _ uint64, f faultCounts) bool { return f.corrupt == sent },
			check: func(t *testing.T, sent, delivered uint64, f faultCounts) {
				if delivered != 0 || f.outOfOrder != 0 {
					t.Errorf("sent %d, delivered %d, faults %+v: want none delivered, all corrupt", sent, delivered, f)
				}
			},
		},
		{
			name: "corrupting the header",
			mangler: each(func(_ int, p []byte) [][]byte {
				q := append([]byte(nil), p...)
				q[1] ^= 1 // another channel
				return [][]byte{q}
			}),
			done: func(sent, _ uint64, f faultCounts) bool { return f.corrupt == sent },
			check: func(t *testing.T, sent, delivered uint64, f faultCounts) {
				if delivered != 0 {
					t.Errorf("sent %d, delivered %d, faults %+v: want none delivered", sent, delivered, f)
				}
			},
		},
		{
			name: "swapping pairs",
			mangler: func() func([]byte) [][]byte {
				n := 0
				var held []byte
				return func(p []byte) [][]byte {
					n++
					if n%2 == 1 {
						held = append(held[:0], p...)
						return nil
					}
					return [][]byte{p, held}
				}
			},
			done: func(sent, delivered uint64, f faultCounts) bool { return delivered+f.outOfOrder+2 >= sent },
			check: func(t *testing.T, sent, delivered uint64, f faultCounts) {
				if delivered > sent/2+2 || f.outOfOrder+2 < sent/2 {
					t.Errorf("sent %d, delivered %d, faults %+v: want half delivered, half out of order", sent, delivered, f)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMiddlebox(t, tc.mangler)
			eps := udpPair(t, m)
			go m.run()
			defer m.close()
			c := &config{transport: "udp", calls: 1, rate: 1000, window: 8, size: 1200, engine: "loops", loops: 1}
			eng := start(t, c, eps)
			defer eng.close()
			waitUntil(t, "1,000 packets are sent", func() bool {
				s, _ := eng.counts()
				return s >= 1000
			})
			sent, delivered, f := settle(t, eng, tc.done)
			tc.check(t, sent, delivered, f)
		})
	}
}

// TestLoopEngineTCPStreamInPieces has the loop engine relay over TCP through a middlebox that passes the stream
// on in pieces that split frames anywhere, with STUN messages between frames: every frame is delivered.
func TestLoopEngineTCPStreamInPieces(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the loop engine is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	var eps []*endpoint
	var accepted []net.Conn
	for range 2 {
		tc, err := turnclient.Dial("tcp", server, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, &endpoint{c: tc})
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, conn)
	}
	eps[0].peer, eps[1].peer = eps[1], eps[0]
	// A STUN binding success response with no attributes: 20 bytes the engine must step over.
	stun := []byte{0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	pieces := func(from, to net.Conn) {
		buf := make([]byte, 4096)
		sizes := []int{1, 3, 700, 5, 1300, 2, 97}
		for i := 0; ; i++ {
			n, err := from.Read(buf[:sizes[i%len(sizes)]])
			if err != nil {
				_ = to.Close()
				return
			}
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	if _, err := accepted[0].Write(stun); err != nil { // before any frame: the engine must step over it
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { pieces(accepted[0], accepted[1]); done <- struct{}{} }()
	go func() { pieces(accepted[1], accepted[0]); done <- struct{}{} }()
	defer func() {
		for _, c := range accepted {
			_ = c.Close()
		}
		<-done
		<-done
	}()
	c := &config{transport: "tcp", calls: 1, rate: 0, window: 16, size: 1199, engine: "loops", loops: 1} // 1199: padded frames
	eng := start(t, c, eps)
	defer eng.close()
	waitUntil(t, "2,000 packets are delivered", func() bool {
		_, d := eng.counts()
		return d >= 2000
	})
	sent, delivered, f := settle(t, eng, allDelivered)
	if f != (faultCounts{}) {
		t.Errorf("sent %d, delivered %d, faults %+v: want none", sent, delivered, f)
	}
}

// TestLoopEngineRecoversFromALostWindow has a middlebox lose a saturating client's whole first window: the
// client waits for credits that never come, takes its packets as lost after 200 ms (a stall, counted), sends a
// new window, and the traffic goes on; what was lost is counted as sent and not delivered.
func TestLoopEngineRecoversFromALostWindow(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the loop engine is Linux's")
	}
	const window = 8
	m := newMiddlebox(t, func() func([]byte) [][]byte {
		n := 0
		return func(p []byte) [][]byte {
			n++
			if n <= window {
				return nil
			}
			return [][]byte{p}
		}
	})
	eps := udpPair(t, m)
	go m.run()
	defer m.close()
	c := &config{transport: "udp", calls: 1, rate: 0, window: window, size: 1200, engine: "loops", loops: 1}
	eng := start(t, c, eps)
	defer eng.close()
	waitUntil(t, "1,000 packets are delivered", func() bool {
		_, d := eng.counts()
		return d >= 1000
	})
	sent, delivered, f := settle(t, eng, func(sent, delivered uint64, _ faultCounts) bool { return delivered+2*window == sent })
	if f.stalls != 2 || f.corrupt != 0 || f.outOfOrder != 0 {
		t.Errorf("sent %d, delivered %d, faults %+v: want a stall in each direction, nothing else", sent, delivered, f)
	}
}
