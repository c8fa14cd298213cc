package echo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"tandem/client"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

// paddedOffer makes a pion offer and returns it padded with attribute lines to about size bytes of JSON: a valid
// offer, as large as the server lets through.
func paddedOffer(t *testing.T, pc *webrtc.PeerConnection, size int) json.RawMessage {
	t.Helper()
	if _, err := pc.CreateDataChannel("chat", nil); err != nil {
		t.Fatal(err)
	}
	for range 40 { // a media section takes about 1.4 KB
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	var sdp strings.Builder
	sdp.WriteString(offer.SDP)
	line := "a=x-padding:" + strings.Repeat("x", 1000) + "\r\n"
	for sdp.Len()+len(line) < size {
		sdp.WriteString(line)
	}
	raw, err := json.Marshal(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp.String()})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// iceRestart returns offer with ICE credentials of its own for i: an ICE restart, as a browser sends when its
// network changes.
func iceRestart(offer json.RawMessage, i int) json.RawMessage {
	s := iceCreds.ReplaceAllString(string(offer), fmt.Sprintf("a=ice-ufrag:u%07d${1}a=ice-pwd:p%023d", i, i))
	return json.RawMessage(s)
}

var iceCreds = regexp.MustCompile(`a=ice-ufrag:[^\\]*(\\r\\n)a=ice-pwd:[^\\]*`)

// TestEchoSurvivesOfferFlood: a caller in a test call floods the echo peer with large renegotiation offers. tandem's
// hub limits renegotiation offers, but only while its message rate limit is on, and the echo peer also runs against
// other servers: the server here has no limits (-rate 0), so the whole flood, 200 offers a second of the largest
// size, reaches the echo peer. The echo peer must stay logged in all along (nobody else can take its name, so nobody
// else receives the test calls), end the flooder's call only, and answer another caller's test call meanwhile.
func TestEchoSurvivesOfferFlood(t *testing.T) {
	url := servertest.StartOn(t, listen(t, "127.0.0.1:0"), func(c *server.Config) { withEcho(c); c.Rate = 0 }, testLogger(t)).URL
	startEcho(t, url, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}

	// Somebody trying to take the echo name all along.
	var stolen atomic.Bool
	thiefCtx, stopThief := context.WithCancel(ctx)
	var thief sync.WaitGroup
	thief.Go(func() {
		c, err := client.Dial(thiefCtx, url, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.CloseNow()
		for thiefCtx.Err() == nil {
			_, err := c.Login(thiefCtx, "echo", "")
			if err == nil {
				stolen.Store(true)
				return
			}
			if !errors.Is(err, client.ErrNameTaken) {
				if thiefCtx.Err() == nil {
					t.Errorf("login as echo: %v", err)
				}
				return
			}
			select {
			case <-thiefCtx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	defer thief.Wait()
	defer stopThief()

	// The flooder: a real offer, then the same offer padded to 60 KB, at the server's default rate.
	flooder, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flooder.CloseNow()
	if _, err := flooder.Login(ctx, "mallory", ""); err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	offer := paddedOffer(t, pc, 60_000)
	leaves := make(chan *client.Message, 1000)
	var reader sync.WaitGroup
	reader.Go(func() { // reads everything, so that the flooder is not dropped as a slow reader itself
		for {
			m, err := flooder.Read(context.Background())
			if err != nil {
				if _, ok := errors.AsType[*client.DecodeError](err); ok {
					continue
				}
				return
			}
			if m.Type == protocol.TypeLeave {
				select {
				case leaves <- m:
				default:
				}
			}
		}
	})
	defer reader.Wait()
	defer flooder.CloseNow()

	floodCtx, stopFlood := context.WithCancel(ctx)
	var flood sync.WaitGroup
	flood.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond) // 200 a second, the default rate
		defer tick.Stop()
		for i := 0; floodCtx.Err() == nil; i++ {
			if err := flooder.SendOffer(floodCtx, "echo", iceRestart(offer, i)); err != nil {
				return
			}
			select {
			case <-floodCtx.Done():
			case <-tick.C:
			}
		}
	})
	defer flood.Wait()
	defer stopFlood()

	// Let the flood run for longer than it took to get the echo peer dropped, then make a test call while it
	// goes on.
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
	}
	p := waitPeer(ctx, t, api, url, "alice")
	defer p.Close()
	if err := p.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mediaCtx, stopMedia := context.WithCancel(ctx)
	var media sync.WaitGroup
	media.Go(func() { p.SendNumbered(mediaCtx, "echo") })
	expectEcho(ctx, t, p, 20)
	stopMedia()
	media.Wait()
	stopFlood()
	flood.Wait()
	stopThief()
	thief.Wait()

	if stolen.Load() {
		t.Error("somebody else logged in as echo during the flood")
	}
	select {
	case m := <-leaves:
		if m.Name != "echo" {
			t.Errorf("the flooder got %+v, want a leave from echo", m)
		}
	default:
		t.Error("the flooder's call was not ended")
	}
}
