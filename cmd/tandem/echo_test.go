package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/servertest"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

// waitForUser asks for the online list until a user named name shows (the echo peer logs in just after the
// server starts), and returns its entry, or nil if it is not there by the deadline and present is false.
func findUser(t *testing.T, url string, opts *client.Options, name string, present bool) *client.User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := servertest.Login(t, ctx, url, "tester", opts)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := c.SendUsers(ctx, name, 1); err != nil {
			t.Fatal(err)
		}
		m, err := c.WaitFor(ctx, protocol.TypeUsers)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range m.Users {
			if u.Name == name {
				return &u
			}
		}
		if !present || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // the echo peer's login is not an event this client can see
	}
}

// openURL finds the address tandem prints for its page ("open http://…", or an indented line of the list it prints
// with a self-signed certificate), not the -metrics-addr line.
var openURL = regexp.MustCompile(`(?m)(?:open |^\s+)(https?)://((?:127\.0\.0\.1|localhost):\d+)/`)

func TestEchoInServer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		echoName string // "" for no echo user
	}{
		{"default", nil, nil, "echo"},
		{"renamed", []string{"-echo-name", "Test line"}, nil, "Test line"},
		{"env", nil, map[string]string{"TANDEM_ECHO_NAME": "mirror", "TANDEM_ECHO_LIMIT": "30s"}, "mirror"},
		{"off", []string{"-echo=false"}, nil, ""},
		{"off by env", nil, map[string]string{"TANDEM_ECHO": "false"}, ""},
		{"tls", []string{"-tls-self-signed"}, nil, "echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-data-dir", t.TempDir(), "-log-level", "error"}, tc.args...)
			ready := "tandem: open http"
			if tc.name == "tls" {
				ready = "fingerprint"
			}
			out := startRun(t, args, tc.env, ready)
			m := openURL.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no URL in:\n%s", out)
			}
			scheme, host := m[1], strings.Replace(m[2], "localhost", "127.0.0.1", 1)
			var opts *client.Options
			hc := http.DefaultClient
			if scheme == "https" {
				tr := http.DefaultTransport.(*http.Transport).Clone()
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
				hc = &http.Client{Transport: tr}
				opts = &client.Options{HTTPClient: hc}
			}
			ws := strings.Replace(scheme, "http", "ws", 1) + "://" + host + "/"

			probe := tc.echoName
			if probe == "" {
				probe = "echo"
			}
			u := findUser(t, ws, opts, probe, tc.echoName != "")
			switch {
			case tc.echoName == "" && u != nil:
				t.Fatalf("echo is off, but the online list has %+v", u)
			case tc.echoName != "" && (u == nil || !u.Echo || u.Busy):
				t.Fatalf("online list entry for %q: %+v, want an echo user", tc.echoName, u)
			}

			resp, err := hc.Get(scheme + "://" + host + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			has := strings.Contains(string(body), "\ntandem_echo_peer_connections 0\n")
			if has != (tc.echoName != "") {
				t.Errorf("/metrics has tandem_echo_peer_connections 0: %v, want %v", has, tc.echoName != "")
			}
		})
	}
}

func TestEchoFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-echo-name", " "},
		{"-echo-name", "a\tb"},
		{"-echo-limit", "soon"},
		{"-echo-max-calls", "0"},
		{"-echo-max-calls", "many"},
	} {
		err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-data-dir", t.TempDir()}, args...),
			func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("tandem %v: no error", args)
		}
	}
}

// TestEchoCallInServer makes a test call to the echo peer inside tandem, run as for a test on one machine
// (-turn-allow-loopback lets the echo peer reach callers on 127.0.0.1, as it lets TURN relay to them), and gets
// its own media back.
func TestEchoCallInServer(t *testing.T) {
	args := []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-turn-allow-loopback", "-data-dir", t.TempDir(), "-log-level", "error"}
	out := startRun(t, args, nil, "tandem: open http")
	m := openURL.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no URL in:\n%s", out)
	}
	url := "ws://" + strings.Replace(m[2], "localhost", "127.0.0.1", 1) + "/"
	findUser(t, url, nil, "echo", true)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	p, err := webrtctest.NewPeer(ctx, api, url, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Call(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mediaCtx, stop := context.WithCancel(ctx)
	var media sync.WaitGroup
	media.Go(func() { p.SendNumbered(mediaCtx, "echo") })
	defer media.Wait()
	defer stop()
	for got := 0; got < 20; {
		select {
		case pkt := <-p.Packets:
			if strings.HasPrefix(string(pkt.Payload), "echo-") {
				got++
			}
		case <-ctx.Done():
			t.Fatal("no media came back from the echo peer")
		}
	}
}
