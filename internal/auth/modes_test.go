package auth_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

// The open mode is the tutorial's: a client that sends nothing but its name logs in, lists users and calls.
func TestOpenModeTutorialClient(t *testing.T) {
	for _, mode := range []string{"no auth", "auth open"} {
		t.Run(mode, func(t *testing.T) {
			var e *env
			if mode == "no auth" {
				srv := servertest.Start(t, nil)
				e = &env{t: t, srv: srv}
				ctx, cancel := contextFor(t)
				defer cancel()
				e.ctx = ctx
			} else {
				e = start(t, auth.Config{Mode: auth.Open}, nil)
			}
			if info := e.authInfo(); info["mode"] != "open" {
				t.Errorf("/auth.json = %v, want mode open", info)
			}
			dial := func() *client.Client {
				c, err := client.Dial(e.ctx, e.srv.URL, &client.Options{Tutorial: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.CloseNow() })
				return c
			}
			alice, bob := dial(), dial()
			if _, err := alice.Login(e.ctx, "alice", ""); err != nil {
				t.Fatal(err)
			}
			// users before login is still answered in the open mode, as it always was.
			if err := bob.SendUsers(e.ctx, "", 0); err != nil {
				t.Fatal(err)
			}
			if m, err := bob.WaitFor(e.ctx, protocol.TypeUsers); err != nil || m.Type != protocol.TypeUsers || m.Total != 1 {
				t.Fatalf("users before login in the open mode: %+v, %v", m, err)
			}
			if _, err := bob.Login(e.ctx, "bob", ""); err != nil {
				t.Fatal(err)
			}
			offer := json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)
			if err := alice.SendOffer(e.ctx, "bob", offer); err != nil {
				t.Fatal(err)
			}
			if m, err := bob.WaitFor(e.ctx, protocol.TypeOffer); err != nil || m.Name != "alice" {
				t.Fatalf("bob's offer: %+v, %v", m, err)
			}
		})
	}
}

// In the password mode nothing but login is answered before login, a wrong or missing password is refused with
// a code and no credentials, the right one lets in under any free name with a device credential, and the device
// credential lets the device back in without the password, until it expires or the password changes.
func TestPasswordMode(t *testing.T) {
	cfg := auth.Config{Mode: auth.Password, Password: "correct horse battery staple"}
	e := start(t, cfg, nil)
	if info := e.authInfo(); info["mode"] != "password" {
		t.Errorf("/auth.json = %v", info)
	}

	// Before login: no user list, no relaying.
	stranger := e.dial()
	if err := stranger.SendUsers(e.ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	if m, _ := stranger.WaitFor(e.ctx, protocol.TypeUsers); m == nil || m.Code != protocol.CodeNotLoggedIn {
		t.Fatalf("users before login: %+v, want not_logged_in", m)
	}
	if err := stranger.SendOffer(e.ctx, "alice", json.RawMessage(`{"type":"offer","sdp":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if m, _ := stranger.WaitFor(e.ctx, protocol.TypeOffer); m == nil || m.Code != protocol.CodeNotLoggedIn {
		t.Fatalf("offer before login: %+v, want not_logged_in", m)
	}

	// A tutorial-style login (a name alone) is refused, and says what the server needs.
	m := e.refused("alice", client.Credentials{}, protocol.CodeAuthRequired)
	if !strings.Contains(m.Message, "password") {
		t.Errorf("auth_required message %q does not say a password is needed", m.Message)
	}
	e.refused("alice", client.Credentials{Password: "Correct horse battery staple"}, protocol.CodeUnauthorized)

	alice, reply := e.in("alice", client.Credentials{Password: cfg.Password})
	if reply.Device == "" || reply.Token == "" {
		t.Fatalf("login reply without a device credential or resume token: %+v", reply)
	}
	if err := alice.SendUsers(e.ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	if m, _ := alice.WaitFor(e.ctx, protocol.TypeUsers); m == nil || m.Total != 1 {
		t.Fatalf("users after login: %+v", m)
	}

	// The device credential: in again, under another name too, without the password.
	_, r2 := e.in("alice-phone", client.Credentials{Device: reply.Device})
	if r2.Device == "" {
		t.Error("a login with a device credential got no renewed one")
	}
	// Forged: one character of the signature changed; or the claims changed (a later expiry) under the old MAC.
	forged := flipLast(reply.Device)
	e.refused("mallory", client.Credentials{Device: forged}, protocol.CodeUnauthorized)
	parts := strings.Split(reply.Device, ".")
	e.refused("mallory", client.Credentials{Device: parts[0] + "." + flipLast(parts[1]) + "." + parts[2]}, protocol.CodeUnauthorized)
	e.refused("mallory", client.Credentials{Device: "not a credential"}, protocol.CodeUnauthorized)

	// Expired: 31 days later.
	later := time.Now().Add(31 * 24 * time.Hour)
	auth.SetClock(e.a, func() time.Time { return later })
	m = e.refused("alice-tablet", client.Credentials{Device: reply.Device}, protocol.CodeExpired)
	if !strings.Contains(m.Message, "expired") {
		t.Errorf("expired device credential: message %q", m.Message)
	}
	auth.SetClock(e.a, time.Now)

	// A server whose password changed (same key) no longer takes the old device credential.
	e2 := start(t, auth.Config{Mode: auth.Password, Password: "a new password"}, nil)
	m = e2.refused("alice", client.Credentials{Device: reply.Device}, protocol.CodeUnauthorized)
	if !strings.Contains(m.Message, "no longer valid") {
		t.Errorf("stale device credential: message %q", m.Message)
	}
	// A wrong device credential with the right password still gets in.
	e2.in("alice", client.Credentials{Device: reply.Device, Password: "a new password"})
}

// A connection that got in with the server's password may rename without sending it again; a resume needs only
// the resume token, which only a user who got in has.
func TestPasswordModeRenameAndResume(t *testing.T) {
	cfg := auth.Config{Mode: auth.Password, Password: "s3cret pass"}
	e := start(t, cfg, nil)
	alice, reply := e.in("alice", client.Credentials{Password: cfg.Password})
	m := e.login(alice, "alicia", "", client.Credentials{})
	if !m.Success || m.Name != "alicia" {
		t.Fatalf("rename without the password: %+v", m)
	}
	// Resume on a new connection with the token alone.
	c := e.dial()
	m = e.login(c, "alicia", m.Token, client.Credentials{})
	if !m.Success {
		t.Fatalf("resume with the resume token: %s %s", m.Code, m.Message)
	}
	// The old token of the name alice (freed by the rename) lets nobody in.
	expectRefusal(t, e.login(e.dial(), "alice", reply.Token, client.Credentials{}), protocol.CodeAuthRequired)
}

// The built-in echo peer logs in with the server's echo token, which no access mode stands in the way of.
func TestEchoPeerLogsInInEveryMode(t *testing.T) {
	e := start(t, auth.Config{Mode: auth.Password, Password: "pw for echo test"}, func(c *server.Config) {
		c.EchoName, c.EchoToken = "echo", "the-echo-token"
	})
	c := e.dial()
	if m := e.login(c, "echo", "the-echo-token", client.Credentials{}); !m.Success {
		t.Fatalf("echo peer: %s %s", m.Code, m.Message)
	}
	e.refused("echo", client.Credentials{}, protocol.CodeAuthRequired)
}

func flipLast(s string) string {
	last := s[len(s)-1]
	r := byte('A')
	if last == 'A' {
		r = 'B'
	}
	return s[:len(s)-1] + string(r)
}

func usersFile(t *testing.T, accounts ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "users.json")
	for i := 0; i+1 < len(accounts); i += 2 {
		if err := auth.AddUser(file, accounts[i], accounts[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return file
}
