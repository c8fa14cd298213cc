package echo_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/echo"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

// TestEchoPanicEndsOneCall: a panic while the echo peer serves one call (a bug, injected here as the call's offer is
// handled) ends that call alone, with a leave to its caller; the echo peer stays logged in, another caller's test
// call goes on with its media coming back, and a new caller still gets one.
func TestEchoPanicEndsOneCall(t *testing.T) {
	url := startServer(t)
	_, reg := runEcho(t, echo.Config{URL: url, Peers: allowLoopback, SettingEngine: webrtctest.LoopbackOnly},
		func(e *echo.Echo) {
			echo.BeforeHandle(e, func(caller, typ string) {
				if caller == "crash" && typ == protocol.TypeOffer {
					panic("injected by the test")
				}
			})
		})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	alice := waitPeer(ctx, t, api, url, "alice")
	defer alice.Close()
	if err := alice.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if err := alice.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}

	crash := waitPeer(ctx, t, api, url, "crash")
	defer crash.Close()
	if err := crash.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	err = crash.WaitConnected(ctx)
	if err == nil {
		t.Fatal("the call whose offer panicked connected")
	}
	t.Logf("the caller whose call panicked was told: %v", err)
	if n := counter(t, reg, "tandem_echo_calls_cut_total", "reason", "panic"); n != 1 {
		t.Errorf("tandem_echo_calls_cut_total{reason=\"panic\"} = %v, want 1", n)
	}

	// alice's call goes on: what she sends still comes back.
	mediaCtx, stopMedia := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		alice.SendNumbered(mediaCtx, "echo")
	}()
	expectEcho(ctx, t, alice, 50)
	stopMedia()
	<-done

	// And a new caller still gets a test call.
	bob := waitPeer(ctx, t, api, url, "bob")
	defer bob.Close()
	if err := bob.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
}

// counter reads the counter name with label=value from reg.
func counter(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}
