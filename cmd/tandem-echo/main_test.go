package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startServer(t *testing.T) string {
	t.Helper()
	return servertest.Start(t, func(c *server.Config) { c.EchoName = "mirror" }).URL
}

// TestRun runs tandem-echo against a tandem server, named by the environment and flags, and finds it online,
// marked as the echo user, with its metrics served; it stops when its context ends.
func TestRun(t *testing.T) {
	url := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	metrics := make(chan net.Addr, 1)
	done := make(chan error, 1)
	env := map[string]string{"TANDEM_SERVER": url, "TANDEM_NAME": "someone", "TANDEM_LIMIT": "1m"}
	go func() {
		done <- run(runCtx, []string{"-name", "mirror", "-metrics", "127.0.0.1:0", "-log-level", "error"},
			func(k string) string { return env[k] }, io.Discard, func(a net.Addr) { metrics <- a })
	}()
	var maddr net.Addr
	select {
	case maddr = <-metrics:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}

	c := servertest.Login(t, ctx, url, "alice", nil)
	for found := false; !found; {
		if err := c.SendUsers(ctx, "", 0); err != nil {
			t.Fatal(err)
		}
		m, err := c.WaitFor(ctx, protocol.TypeUsers)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range m.Users {
			if u.Name == "someone" {
				t.Fatal("the -name flag did not win over TANDEM_NAME")
			}
			found = found || (u.Name == "mirror" && u.Echo)
		}
		if !found {
			select {
			case <-ctx.Done():
				t.Fatal("tandem-echo did not log in")
			case <-time.After(20 * time.Millisecond): // its login is not an event this client can see
			}
		}
	}

	resp, err := http.Get("http://" + maddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\ntandem_echo_peer_connections 0\n") {
		t.Errorf("/metrics has no tandem_echo_peer_connections 0:\n%s", body)
	}

	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"-limit", "soon"}},
		{args: []string{"-log-format", "xml"}},
		{args: []string{"-ca", "/nonexistent.pem"}},
		{args: []string{"-server", ""}},
		{args: []string{"extra"}},
		{args: []string{"-max-calls", "0"}},
		{args: []string{"-allow-peers", "10.0.0.0"}},
		{env: map[string]string{"TANDEM_INSECURE": "maybe"}},
	} {
		err := run(context.Background(), tc.args, func(k string) string { return tc.env[k] }, io.Discard, nil)
		if err == nil {
			t.Errorf("tandem-echo %v %v: no error", tc.args, tc.env)
		}
	}
}
