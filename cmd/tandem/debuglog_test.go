package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem/client"
)

// runTandem runs tandem with args until the test ends (or stop is called) and waits until it printed where it
// listens; it returns its printed output and its log.
func runTandem(t *testing.T, args ...string) (out, logs *lockedBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, logs = &lockedBuffer{}, &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(string) string { return "" }, out, logs) }()
	var err error
	var once bool
	stop = func() error {
		if !once {
			once = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "tandem: open http"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("run ended: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tandem did not start; it printed:\n%s", out)
		}
	}
	return out, logs, stop
}

// TestDebugLog: at -log-level debug the log has tandem's own decisions (a login, a TURN allocation) and none of
// pion's lines; -log-level trace adds pion's, at level TRACE.
func TestDebugLog(t *testing.T) {
	for _, level := range []string{"debug", "trace"} {
		t.Run(level, func(t *testing.T) {
			out, logs, stop := runTandem(t, "-addr", "127.0.0.1:0", "-turn-addr", "127.0.0.1:0", "-echo=false",
				"-data-dir", t.TempDir(), "-log-level", level)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, wsURL(t, out.String()), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			reply, err := c.Login(ctx, "alice", "")
			if err != nil {
				t.Fatal(err)
			}
			addr, user, pass := turnCredential(t, reply.ICEServers)
			if err := tryAllocate(t, addr, user, pass); err != nil {
				t.Fatal(err)
			}
			_ = c.CloseNow()
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			log := logs.String()
			for _, want := range []string{`level=DEBUG msg="user logged in" name=alice`, `level=DEBUG msg="TURN allocation"`} {
				if !strings.Contains(log, want) {
					t.Errorf("no %q in the log", want)
				}
			}
			pion := regexp.MustCompile(`(?m)^.* pion=.*$`).FindAllString(log, -1)
			switch {
			case level == "debug" && len(pion) > 0:
				t.Errorf("pion's lines at -log-level debug: %q", pion)
			case level == "trace" && len(pion) == 0:
				t.Error("no pion line at -log-level trace")
			}
			for _, l := range pion {
				if !strings.Contains(l, "level=TRACE") && !strings.Contains(l, "level=WARN") {
					t.Errorf("pion's line not at TRACE: %q", l)
				}
			}
		})
	}
}
