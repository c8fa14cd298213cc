package main

import (
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"tandem/client"
	"tandem/protocol"
)

// turnCredential returns the TURN server address and credential of a login reply.
func turnCredential(t *testing.T, servers []protocol.ICEServer) (addr, username, password string) {
	t.Helper()
	for _, s := range servers {
		for _, u := range s.URLs {
			if rest, ok := strings.CutPrefix(u, "turn:"); ok && s.Credential != "" {
				addr, _, _ = strings.Cut(rest, "?")
				return addr, s.Username, s.Credential
			}
		}
	}
	t.Fatalf("no TURN server in %+v", servers)
	return "", "", ""
}

// tryAllocate makes a TURN allocation over UDP with a pion client, kept until the test ends.
func tryAllocate(t *testing.T, addr, username, password string) error {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Username: username, Password: password, Conn: conn,
		RTO: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { _ = relay.Close() })
	}
	return err
}

// TestTURNQuotaAcrossRename runs tandem with small TURN caps from its environment variables: a login gets its
// per-session quota of allocations, and renaming on the same connection (a new login) adds only what is left of
// the client address's quota.
func TestTURNQuotaAcrossRename(t *testing.T) {
	env := map[string]string{
		"TANDEM_TURN_MAX_ALLOCATIONS_PER_SESSION": "2",
		"TANDEM_TURN_MAX_ALLOCATIONS_PER_ADDRESS": "3",
	}
	args := []string{"-addr", "127.0.0.1:0", "-turn-addr", "127.0.0.1:0", "-echo=false", "-data-dir", t.TempDir(),
		"-log-level", "error"}
	out := startRun(t, args, env, "STUN/TURN on port")
	m := regexp.MustCompile(`open http://(\S+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no URL in:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+m[1]+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	allocations := func(name string) (granted int) {
		t.Helper()
		reply, err := c.Login(ctx, name, "")
		if err != nil || !reply.Success {
			t.Fatalf("login %s: %+v, %v", name, reply, err)
		}
		addr, user, pass := turnCredential(t, reply.ICEServers)
		for range 4 {
			if tryAllocate(t, addr, user, pass) != nil {
				break
			}
			granted++
		}
		return granted
	}
	if n := allocations("alice"); n != 2 {
		t.Errorf("alice got %d allocations, want the login's 2", n)
	}
	if n := allocations("bob"); n != 1 {
		t.Errorf("after renaming to bob: %d more allocations, want 1 (the address's 3 less alice's 2)", n)
	}
	if n := allocations("carol"); n != 0 {
		t.Errorf("after renaming to carol: %d more allocations, want none", n)
	}
}
