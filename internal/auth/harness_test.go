package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/server"
	"tandem/internal/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = []byte("a device key for tests, 32 bytes")

// env is a real tandem server on 127.0.0.1 with an access mode.
type env struct {
	t   *testing.T
	a   *auth.Auth
	srv *servertest.Server
	ctx context.Context
}

// start runs a server whose logins a, made from cfg, checks. The Auth is closed after the server stops.
func start(t *testing.T, cfg auth.Config, change func(*server.Config)) *env {
	t.Helper()
	if cfg.Key == nil && cfg.Mode != auth.JWT {
		cfg.Key = testKey
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close) // cleanups run last first: after the server has stopped
	srv := servertest.Start(t, func(c *server.Config) {
		c.Auth = a
		if change != nil {
			change(c)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &env{t: t, a: a, srv: srv, ctx: ctx}
}

// dial connects a client, closed when the test ends.
func (e *env) dial() *client.Client {
	e.t.Helper()
	c, err := client.Dial(e.ctx, e.srv.URL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// login sends a login with cred on c and returns the reply, a success or a refusal.
func (e *env) login(c *client.Client, name, token string, cred client.Credentials) *client.Message {
	e.t.Helper()
	m, err := c.LoginWith(e.ctx, name, token, cred)
	var ce *client.Error
	if err != nil && !errors.As(err, &ce) {
		e.t.Fatalf("login as %q: %v", name, err)
	}
	return m
}

// in logs a new connection in and fails the test unless it gets in; it returns the client and the reply.
func (e *env) in(name string, cred client.Credentials) (*client.Client, *client.Message) {
	e.t.Helper()
	c := e.dial()
	m := e.login(c, name, "", cred)
	if !m.Success {
		e.t.Fatalf("login as %q refused: %s: %s", name, m.Code, m.Message)
	}
	return c, m
}

// refused logs a new connection in and fails the test unless the login is refused with code; it returns the
// reply.
func (e *env) refused(name string, cred client.Credentials, code string) *client.Message {
	e.t.Helper()
	m := e.login(e.dial(), name, "", cred)
	expectRefusal(e.t, m, code)
	return m
}

func expectRefusal(t *testing.T, m *client.Message, code string) {
	t.Helper()
	switch {
	case m.Success:
		t.Fatalf("login as %q succeeded, want %s", m.Name, code)
	case m.Code != code:
		t.Fatalf("login refused with %s (%q), want %s", m.Code, m.Message, code)
	case m.Message == "":
		t.Fatalf("refusal %s without a message", code)
	case len(m.ICEServers) > 0 || m.Token != "" || m.Device != "":
		t.Fatalf("a refused login got credentials: %+v", m)
	}
}

// authInfo fetches GET /auth.json.
func (e *env) authInfo() map[string]any {
	e.t.Helper()
	resp, err := http.Get(e.srv.HTTP() + "/auth.json")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var info map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &info) != nil {
		e.t.Fatalf("GET /auth.json: %d %s", resp.StatusCode, body)
	}
	return info
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contextFor(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}
