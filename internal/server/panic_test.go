package server_test

import (
	"errors"
	"testing"

	"tandem/client"
	"tandem/internal/server"
	"tandem/protocol"
)

// TestPanicInHubLeavesOthersAlone: a panic while the hub handles one user's login, with the hub's lock held (the
// ICE servers are made under it; a bug is injected there), closes that connection alone with 1011. Everyone else
// goes on: the lock is given back, a user already online is answered, and a new user logs in.
func TestPanicInHubLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	r := startServer(t, func(c *server.Config) {
		c.ICEServers = func(name, _, _ string) []protocol.ICEServer {
			if name == "crash" {
				panic("injected by the test")
			}
			return nil
		}
	})
	ctx := ctx5(t)
	alice := r.user("alice", nil)

	crash := r.dial(nil)
	_, err := crash.Login(ctx, "crash", "")
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 1011 {
		t.Fatalf("the login that panicked got %v, want the connection closed with 1011", err)
	}

	if err := alice.SendUsers(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	if m := next(t, alice); m.Type != protocol.TypeUsers {
		t.Fatalf("alice got %+v after the panic, want the user list", m)
	}
	bob := r.dial(nil)
	if _, err := bob.Login(ctx, "bob", ""); err != nil {
		t.Fatalf("a new login after the panic: %v", err)
	}
}
