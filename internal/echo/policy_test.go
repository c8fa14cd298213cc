package echo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"tandem/client"
	"tandem/internal/echo"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/internal/turnserver"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

// gatherOnLoopback keeps the echo peer's own candidates on 127.0.0.1 (no test packet may leave loopback) without
// touching which remote addresses it accepts: that is the policy's job, under test here.
func gatherOnLoopback(se *webrtc.SettingEngine) {
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
}

// TestEchoSendsNothingToLoopbackCandidates: with the default address policy, a caller whose candidates name
// 127.0.0.1 (in the offer's SDP, trickled, and as the source of its own connectivity checks) gets no packet sent
// there by the echo peer: the server's loopback services cannot be reached or flooded through a test call.
func TestEchoSendsNothingToLoopbackCandidates(t *testing.T) {
	url := startServer(t)
	const limit = 2 * time.Second
	runEcho(t, echo.Config{URL: url, Limit: limit, SettingEngine: gatherOnLoopback})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	trap, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer trap.Close()
	trapPort := trap.LocalAddr().(*net.UDPAddr).Port
	received := make(chan string, 1)
	go func() {
		buf := make([]byte, 1500)
		n, from, err := trap.ReadFrom(buf)
		if err == nil {
			received <- fmt.Sprintf("%d bytes from %v", n, from)
		}
	}()

	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, err := c.Login(ctx, "mallory", ""); err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.CreateDataChannel("chat", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	// The offer with the caller's own (loopback) candidates and one naming the trap, in every media section.
	trapLine := fmt.Sprintf("a=candidate:9 1 udp 2130706431 127.0.0.1 %d typ host\r\n", trapPort)
	sdp := strings.ReplaceAll(pc.LocalDescription().SDP, "a=end-of-candidates\r\n", trapLine+"a=end-of-candidates\r\n")
	if !strings.Contains(sdp, trapLine) {
		t.Fatalf("no place for the candidate in the offer:\n%s", sdp)
	}
	raw, _ := json.Marshal(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp})
	if err := c.SendOffer(ctx, "echo", raw); err != nil {
		t.Fatal(err)
	}
	for i, cand := range []string{
		fmt.Sprintf("candidate:7 1 udp 2130706431 127.0.0.1 %d typ host", trapPort),
		fmt.Sprintf("candidate:8 1 udp 1694498815 127.0.0.1 %d typ srflx raddr 0.0.0.0 rport 0", trapPort),
		fmt.Sprintf("candidate:6 1 udp 2130706431 ::ffff:127.0.0.1 %d typ host", trapPort),
		"candidate:5 1 udp 2130706431 trap.local 9 typ host",
	} {
		raw, _ := json.Marshal(webrtc.ICECandidateInit{Candidate: cand, SDPMid: new("0"), SDPMLineIndex: new(uint16(0))})
		if err := c.SendCandidate(ctx, "echo", raw); err != nil {
			t.Fatalf("candidate %d: %v", i, err)
		}
	}

	// The caller's own checks reach the echo peer from 127.0.0.1 meanwhile; the call cannot connect, and ends
	// at the time limit. Nothing may have reached the trap by then.
	for {
		m, err := c.Read(ctx)
		if _, ok := errors.AsType[*client.DecodeError](err); ok {
			continue
		}
		if err != nil {
			t.Fatalf("no leave from echo at its time limit: %v", err)
		}
		if m.Type == protocol.TypeLeave {
			break
		}
	}
	if st := pc.ICEConnectionState(); st == webrtc.ICEConnectionStateConnected || st == webrtc.ICEConnectionStateCompleted {
		t.Errorf("the caller's ICE connected to the echo peer through loopback candidates (%v)", st)
	}
	trap.SetReadDeadline(time.Now().Add(200 * time.Millisecond)) // anything still on its way
	select {
	case got := <-received:
		t.Errorf("the echo peer sent to a loopback candidate: %s", got)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestEchoReachesCallerThroughOwnRelay: with the default policy, which refuses loopback, a caller whose only
// path is a relay of the server's own TURN server (here on 127.0.0.1, as a LAN's relay is on a private address)
// still gets its test call: the echo peer may reach the server's own relays.
func TestEchoReachesCallerThroughOwnRelay(t *testing.T) {
	logger := testLogger(t)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var turn *turnserver.Server
	cfg := server.DefaultConfig()
	cfg.EchoName = "echo"
	cfg.ICEServers = func(name, host, session string) []protocol.ICEServer { return turn.ICEServers(name, host, session) }
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	turn, err = turnserver.New(turnserver.Config{ListenAddr: "127.0.0.1:0", Secret: "a test secret of some length", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := turn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turn.Close() }) // after the server and the echo peer have stopped
	url := servertest.Serve(t, srv, nil).URL
	_, reg := runEcho(t, echo.Config{URL: url, Relays: turn, SettingEngine: gatherOnLoopback})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	caller := newRawCaller(ctx, t, api, url, "alice")
	if len(caller.config.ICEServers) == 0 {
		t.Fatal("no ICE servers in the login reply")
	}
	caller.config.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	_, connected := caller.offer(ctx)
	select {
	case <-connected:
	case m := <-caller.leaves:
		t.Fatalf("the echo peer ended the call: %+v", m)
	case <-ctx.Done():
		t.Fatal("a caller behind the server's own relay could not reach the echo peer")
	}
	caller.close()
	waitGauge(ctx, t, reg, "tandem_echo_peer_connections", 0)
}
