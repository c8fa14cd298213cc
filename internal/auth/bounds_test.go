package auth_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/internal/turnserver"
	"tandem/protocol"
)

// A login storm costs a bounded amount of work: password hashes run one at a time here (HashWorkers 1) with at
// most 4 waiting, every login beyond is refused at once with server_busy and a retryAfter, and users already
// in a call keep relaying while the hashes run.
func TestLoginStormIsBounded(t *testing.T) {
	file := usersFile(t, "alice", "pw-alice", "bob", "pw-bob")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file, HashWorkers: 1, HashQueue: 4}, nil)
	alice, _ := e.in("alice", client.Credentials{Password: "pw-alice"})
	bob, _ := e.in("bob", client.Credentials{Password: "pw-bob"})

	const storm = 40
	conns := make([]*client.Client, storm)
	for i := range conns {
		conns[i] = e.dial()
	}
	var wg sync.WaitGroup
	replies := make([]*client.Message, storm)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, _ := c.LoginWith(e.ctx, "alice", "", client.Credentials{Password: "guess"})
			replies[i] = m
		}()
	}
	eventually(t, "checks pile up", func() bool { return auth.Pending(e.a) >= 3 })
	// While hashes run, a call's messages still go through at once.
	if err := alice.SendOffer(e.ctx, "bob", json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := bob.WaitFor(e.ctx, protocol.TypeOffer); err != nil || m.Name != "alice" {
		t.Fatalf("bob's offer during the storm: %+v, %v", m, err)
	}
	if n := auth.Pending(e.a); n == 0 {
		t.Fatal("the relay waited for the hashes (no check was pending any more when it arrived)")
	}
	wg.Wait()
	busy, refused := 0, 0
	for i, m := range replies {
		switch {
		case m == nil:
			t.Fatalf("login %d got no reply", i)
		case m.Code == protocol.CodeServerBusy:
			busy++
			if m.RetryAfter < 1 {
				t.Errorf("server_busy without retryAfter: %+v", m)
			}
		case m.Code == protocol.CodeUnauthorized:
			refused++
		case m.Code == protocol.CodeRateLimited: // the backoff of the account alice, once its free failures are spent
			refused++
		default:
			t.Errorf("login %d: %s %s", i, m.Code, m.Message)
		}
	}
	if busy == 0 || refused == 0 || busy+refused != storm {
		t.Fatalf("%d busy, %d refused of %d", busy, refused, storm)
	}
	t.Logf("%d refused at once as busy, %d checked", busy, refused)
}

// Login attempts per client address are limited (a token bucket), and failed ones are slowed down: after 5
// free failures each costs a growing wait, capped at MaxBackoff, and forgotten over time; a device credential
// still gets its owner in meanwhile.
func TestThrottlePerAddress(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		e := start(t, auth.Config{Mode: auth.Password, Password: "pw", LimitLoopback: true, LoginBurst: 3, LoginRate: 0.01}, nil)
		for i := range 3 {
			e.in("user"+string(rune('a'+i)), client.Credentials{Password: "pw"})
		}
		m := e.refused("userd", client.Credentials{Password: "pw"}, protocol.CodeRateLimited)
		if m.RetryAfter < 1 || !strings.Contains(m.Message, "too many logins") {
			t.Errorf("rate limited: %+v", m)
		}
	})
	t.Run("failures", func(t *testing.T) {
		e := start(t, auth.Config{Mode: auth.Password, Password: "pw", LimitLoopback: true, LoginRate: -1}, nil)
		_, first := e.in("owner", client.Credentials{Password: "pw"})
		now := time.Now()
		var mu sync.Mutex
		auth.SetClock(e.a, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
		advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

		for range 5 {
			e.refused("x", client.Credentials{Password: "wrong"}, protocol.CodeUnauthorized)
		}
		// The sixth failure is checked, and from then on the address waits 1 s, 2 s, 4 s...
		e.refused("x", client.Credentials{Password: "wrong"}, protocol.CodeUnauthorized)
		m := e.refused("x", client.Credentials{Password: "pw"}, protocol.CodeRateLimited)
		if m.RetryAfter != 1 || !strings.Contains(m.Message, "failed logins") {
			t.Errorf("after 6 failures: %+v", m)
		}
		// A device credential is not held to the backoff.
		e.in("owner-phone", client.Credentials{Device: first.Device})
		advance(1100 * time.Millisecond)
		e.in("x", client.Credentials{Password: "pw"})

		// However many failures, the wait never passes MaxBackoff (30 s).
		worst := 0
		for range 20 {
			m := e.login(e.dial(), "y", "", client.Credentials{Password: "wrong"})
			if m.Code == protocol.CodeRateLimited {
				worst = max(worst, m.RetryAfter)
				advance(time.Duration(m.RetryAfter) * time.Second)
			}
		}
		if worst != 30 {
			t.Errorf("longest wait %d s, want the cap, 30", worst)
		}
		// Failures are forgotten, one a minute.
		advance(30 * time.Minute)
		e.in("y", client.Credentials{Password: "pw"})
	})
}

// TURN credentials go only to users who got in: a refused login carries none (checked by refused), a login
// that got in carries credentials the TURN server takes.
func TestTURNCredentialsOnlyAfterLogin(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	a, err := auth.New(auth.Config{Mode: auth.Password, Password: "pw", Key: testKey, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	var turn *turnserver.Server
	cfg := server.DefaultConfig()
	cfg.Auth = a
	cfg.ICEServers = func(name, host, session string) []protocol.ICEServer { return turn.ICEServers(name, host, session) }
	cfg.SessionEnded = func(session string) { turn.EndSession(session) }
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	turn, err = turnserver.New(turnserver.Config{ListenAddr: "127.0.0.1:0", Secret: "a test secret of some length", Registerer: srv.Registry(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := turn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turn.Close() })
	ctx, cancel := contextFor(t)
	defer cancel()
	e := &env{t: t, a: a, srv: servertest.Serve(t, srv, nil), ctx: ctx}

	e.refused("alice", client.Credentials{}, protocol.CodeAuthRequired)
	e.refused("alice", client.Credentials{Password: "wrong"}, protocol.CodeUnauthorized)
	_, m := e.in("alice", client.Credentials{Password: "pw"})
	var turnURL bool
	for _, s := range m.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") && s.Username != "" && s.Credential != "" {
				turnURL = true
			}
		}
	}
	if !turnURL {
		t.Fatalf("a user who got in has no TURN credentials: %+v", m.ICEServers)
	}
}
