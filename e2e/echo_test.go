package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"tandem/internal/echo"
	"tandem/internal/netaddr"
	"tandem/internal/server"
)

// startEcho runs tandem's echo peer against srv until the test ends (before the server stops), as the tandem
// command does, with its default settings but for the address policy of -turn-allow-loopback: inside this
// loopback-only namespace the browser's candidates, like the echo peer's, are on 127.0.0.1.
func startEcho(t *testing.T, srv *tandem, limit time.Duration) {
	t.Helper()
	e, err := echo.New(echo.Config{
		URL:        srv.wsURL,
		Limit:      limit,
		Peers:      netaddr.NewPeerPolicy(true, nil, nil),
		Registerer: srv.server.Registry(),
		Logger:     slog.New(slog.NewTextHandler(srv.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-e.LoggedIn():
	case <-time.After(wait):
		t.Fatal("the echo peer did not log in")
	}
}

// echoConnections reads tandem_echo_peer_connections from the server's /metrics.
func echoConnections(t *testing.T, srv *tandem) string {
	t.Helper()
	resp, err := http.Get(srv.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "tandem_echo_peer_connections "); ok {
			return v
		}
	}
	t.Fatalf("no tandem_echo_peer_connections in /metrics:\n%s", body)
	return ""
}

// TestEchoTestCall: a person alone clicks "Test call" and sees their own video and hears their own audio come back
// through the server's echo peer, and their chat comes back too. Then they hang up and the echo peer's peer
// connection is released.
func TestEchoTestCall(t *testing.T) {
	srv := startTandem(t, func(c *server.Config) { c.EchoName = "echo" })
	startEcho(t, srv, 0)
	alice := openTandem(t, srv, "alice", "")
	alice.waitFor("the Test call button", `!document.querySelector('#test-call').hidden`)
	alice.click("#test-call-button")
	alice.waitPhase("active")
	m := alice.assertMedia(tandemMedia)
	t.Logf("own media back: %+v", m)
	if got := value[string](alice, `document.querySelector('#call-peer').textContent`); got != "echo" {
		t.Errorf("the call is with %q, want echo", got)
	}
	if n := echoConnections(t, srv); n != "1" {
		t.Errorf("tandem_echo_peer_connections = %s during the call, want 1", n)
	}

	alice.waitFor("chat ready", `tandem.chatReady && !document.querySelector('#chat-input').disabled`)
	alice.must(`(() => {
		document.querySelector('#chat-input').value = 'testing, one two';
		document.querySelector('#chat-form').requestSubmit();
	})()`)
	alice.waitFor("the chat echoed", `[...document.querySelectorAll('#chat-log .msg-them .msg-text')].some((e) => e.textContent === 'testing, one two')`)
	alice.screenshot("echo-call")

	alice.click("#hangup-button")
	alice.waitPhase("idle")
	deadline := time.Now().Add(wait)
	for echoConnections(t, srv) != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("tandem_echo_peer_connections = %s after the call, want 0", echoConnections(t, srv))
		}
		time.Sleep(50 * time.Millisecond) // the peer connection is released in the background
	}
}

// TestEchoTimeLimit: the echo peer hangs up by itself at its time limit, and the page says the call ended.
func TestEchoTimeLimit(t *testing.T) {
	srv := startTandem(t, func(c *server.Config) { c.EchoName = "echo" })
	startEcho(t, srv, 4*time.Second)
	alice := openTandem(t, srv, "alice", "")
	alice.waitFor("the Test call button", `!document.querySelector('#test-call').hidden`)
	alice.click("#test-call-button")
	alice.waitPhase("active")
	alice.waitPhase("idle")
	alice.waitNotice(fmt.Sprintf("%s hung up", "echo"))
}
