package webrtctest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"tandem/client"
	"tandem/internal/servertest"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer runs a tandem server on 127.0.0.1 until the test ends and returns its WebSocket URL.
func startServer(t *testing.T) string {
	t.Helper()
	return servertest.Start(t, nil).URL
}

// TestCall is a whole call without a browser: two pion peers log in through a real tandem server, one calls the
// other with the tutorial client's messages (name on every message, candidates included), ICE connects on
// 127.0.0.1, and audio, video and chat flow both ways.
func TestCall(t *testing.T) {
	for _, tutorial := range []bool{true, false} {
		t.Run(fmt.Sprintf("tutorial=%v", tutorial), func(t *testing.T) {
			url := startServer(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			api, err := webrtctest.NewAPI()
			if err != nil {
				t.Fatal(err)
			}
			opts := &client.Options{Tutorial: tutorial}
			alice, err := webrtctest.NewPeer(ctx, api, url, "alice", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer alice.Close()
			bob, err := webrtctest.NewPeer(ctx, api, url, "bob", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer bob.Close()

			if err := alice.Call(ctx, "bob"); err != nil {
				t.Fatal(err)
			}
			for _, p := range []*webrtctest.Peer{alice, bob} {
				if err := p.WaitConnected(ctx); err != nil {
					t.Fatal(err)
				}
			}
			assertLoopbackPair(t, alice.PC)

			mediaCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Go(func() { alice.SendNumbered(mediaCtx, "from-alice") })
			wg.Go(func() { bob.SendNumbered(mediaCtx, "from-bob") })
			expect(ctx, t, bob, "from-alice", 20)
			expect(ctx, t, alice, "from-bob", 20)
			stop()
			wg.Wait()

			if err := alice.SendChat(ctx, "hi bob"); err != nil {
				t.Fatal(err)
			}
			expectChat(ctx, t, bob, "hi bob")
			if err := bob.SendChat(ctx, "hi alice"); err != nil {
				t.Fatal(err)
			}
			expectChat(ctx, t, alice, "hi alice")

			// Hang up: the other side is told.
			if err := alice.C.SendLeave(ctx, "bob", ""); err != nil {
				t.Fatal(err)
			}
			for m := range bob.Messages {
				if m.Type == protocol.TypeLeave {
					if m.Name != "alice" && !tutorial {
						t.Errorf("leave from %q, want alice", m.Name)
					}
					break
				}
			}
		})
	}
}

// assertLoopbackPair checks that the selected candidate pair is on 127.0.0.1 at both ends.
func assertLoopbackPair(t *testing.T, pc *webrtc.PeerConnection) {
	t.Helper()
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("no selected candidate pair: %v", err)
	}
	if pair.Local.Address != "127.0.0.1" || pair.Remote.Address != "127.0.0.1" {
		t.Fatalf("selected pair %s <-> %s is not on loopback", pair.Local.Address, pair.Remote.Address)
	}
}

// expect waits for n packets of each kind from the other peer, with the payload sent for their number.
func expect(ctx context.Context, t *testing.T, p *webrtctest.Peer, tag string, n int) {
	t.Helper()
	got := map[string]int{}
	for got["audio"] < n || got["video"] < n {
		select {
		case pkt := <-p.Packets:
			matched := false
			for _, kind := range []string{"audio", "video"} {
				if string(pkt.Payload) == webrtctest.NumberedPayload(tag, kind, pkt.SequenceNumber) {
					got[kind]++
					matched = true
				}
			}
			if !matched {
				t.Fatalf("%s received packet %d with payload %q", p.Name, pkt.SequenceNumber, pkt.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("%s received only %v", p.Name, got)
		}
	}
}

func expectChat(ctx context.Context, t *testing.T, p *webrtctest.Peer, want string) {
	t.Helper()
	select {
	case got := <-p.Chat:
		if got != want {
			t.Fatalf("%s got chat %q, want %q", p.Name, got, want)
		}
	case <-ctx.Done():
		t.Fatalf("%s got no chat", p.Name)
	}
}
