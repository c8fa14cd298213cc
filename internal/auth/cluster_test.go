package auth_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/cluster"
	"tandem/internal/server"
	"tandem/protocol"
)

// Every access mode on every node of a cluster (here an in-process one): two servers with the same settings (the
// same key, the same users file) let the same users in, a device credential from one node works on the other,
// nothing but login is answered before login on either, and users of the two nodes call each other. The hub's
// cluster pauses the connection's reading too while it asks the shared state; the login's own pause composes
// with it, so a message sent behind the login still waits for it.
func TestEveryModeOnEveryNode(t *testing.T) {
	users := usersFile(t, "alice", "pw-alice", "bob", "pw-bob")
	modes := []struct {
		name  string
		cfg   auth.Config
		alice client.Credentials
		bob   client.Credentials
	}{
		{"password", auth.Config{Mode: auth.Password, Password: "shared pw"},
			client.Credentials{Password: "shared pw"}, client.Credentials{Password: "shared pw"}},
		{"accounts", auth.Config{Mode: auth.Accounts, UsersFile: users},
			client.Credentials{Password: "pw-alice"}, client.Credentials{Password: "pw-bob"}},
		{"jwt", auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{Secret: jwtSecret, Audience: testAudience, Issuer: testIssuer}},
			client.Credentials{JWT: signHS(t, "alice")}, client.Credentials{JWT: signHS(t, "bob")}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			m := cluster.NewMemory(time.Second)
			a := start(t, mode.cfg, func(c *server.Config) { c.Cluster = m.Node("a") })
			b := start(t, mode.cfg, func(c *server.Config) { c.Cluster = m.Node("b") })

			for _, e := range []*env{a, b} {
				c := e.dial()
				if err := c.SendUsers(e.ctx, "", 0); err != nil {
					t.Fatal(err)
				}
				if m, _ := c.WaitFor(e.ctx, protocol.TypeUsers); m == nil || m.Code != protocol.CodeNotLoggedIn {
					t.Fatalf("users before login: %+v", m)
				}
				e.refused("mallory", client.Credentials{}, protocol.CodeAuthRequired)
			}

			// alice on node a, with a users request right behind her login: it waits for the login.
			alice := a.dial()
			if err := alice.SendLoginWith(a.ctx, "alice", "", mode.alice); err != nil {
				t.Fatal(err)
			}
			if err := alice.SendUsers(a.ctx, "", 0); err != nil {
				t.Fatal(err)
			}
			reply, err := alice.Read(a.ctx)
			if err != nil || !reply.Success || reply.Name != "alice" {
				t.Fatalf("alice's login: %+v, %v", reply, err)
			}
			if m, err := alice.Read(a.ctx); err != nil || m.Type != protocol.TypeUsers || m.Code != "" {
				t.Fatalf("alice's users request: %+v, %v", m, err)
			}
			bob, _ := b.in("bob", mode.bob)
			if err := alice.SendOffer(a.ctx, "bob", json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)); err != nil {
				t.Fatal(err)
			}
			if m, err := bob.WaitFor(b.ctx, protocol.TypeOffer); err != nil || m.Name != "alice" {
				t.Fatalf("bob's offer from the other node: %+v, %v", m, err)
			}
			// Two nodes, one name: alice cannot log in on node b meanwhile.
			b.refused("alice", mode.alice, protocol.CodeNameTaken)

			if reply.Device == "" {
				return // the jwt mode gives no device credential
			}
			_ = alice.Close()
			eventually(t, "alice's name is freed", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c := b.dial()
				m, _ := c.LoginWith(ctx, "alice", "", client.Credentials{Device: reply.Device})
				return m != nil && m.Success
			})
		})
	}
}

func signHS(t *testing.T, name string) string {
	return sign(t, jwt.SigningMethodHS256, claims(name), jwtSecret, "")
}
