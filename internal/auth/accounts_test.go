package auth_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/protocol"
)

// In the accounts mode a user logs in as their account's name only, with its password; the users file is
// re-read while the server runs; a changed password or a removed account ends the device credentials.
func TestAccountsMode(t *testing.T) {
	file := usersFile(t, "alice", "alice's password", "bob", "bob's password")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file}, nil)
	if info := e.authInfo(); info["mode"] != "accounts" {
		t.Errorf("/auth.json = %v", info)
	}
	e.refused("alice", client.Credentials{}, protocol.CodeAuthRequired)
	e.refused("alice", client.Credentials{Password: "bob's password"}, protocol.CodeUnauthorized)
	m := e.refused("carol", client.Credentials{Password: "anything"}, protocol.CodeUnauthorized)
	if !strings.Contains(m.Message, "unknown user or wrong password") {
		t.Errorf("unknown account: message %q should not tell it from a wrong password", m.Message)
	}
	// Names are the accounts': a case variant is not alice.
	e.refused("Alice", client.Credentials{Password: "alice's password"}, protocol.CodeUnauthorized)

	aliceConn, alice := e.in("alice", client.Credentials{Password: "alice's password"})
	_, bob := e.in("bob", client.Credentials{Password: "bob's password"})
	if alice.Device == "" || bob.Device == "" {
		t.Fatal("no device credentials")
	}
	// A device credential names its account: with no name, or the account's, it lets in as that account...
	_ = aliceConn.Close()
	eventually(t, "alice's name is freed", func() bool { return e.srv.Online() == 1 })
	if _, m := e.in("", client.Credentials{Device: alice.Device}); m.Name != "alice" {
		t.Errorf("device login without a name got %q", m.Name)
	}
	// ... and not as another account.
	e.refused("bob", client.Credentials{Device: alice.Device}, protocol.CodeUnauthorized)

	// carol is added while the server runs: she can log in once the file is re-read.
	if err := auth.AddUser(file, "carol", "carol's password"); err != nil {
		t.Fatal(err)
	}
	auth.Reload(e.a) // what the watcher does within a second
	e.in("carol", client.Credentials{Password: "carol's password"})

	// alice changes her password: the old one and the old device credential stop working.
	if err := auth.SetPassword(file, "alice", "alice's new password"); err != nil {
		t.Fatal(err)
	}
	auth.Reload(e.a)
	e.refused("alice", client.Credentials{Password: "alice's password"}, protocol.CodeUnauthorized)
	e.refused("alice", client.Credentials{Device: alice.Device}, protocol.CodeUnauthorized)
	e.refused("alice", client.Credentials{Password: "alice's new password"}, protocol.CodeNameTaken) // still online

	// bob is removed: his device credential stops working.
	if err := auth.RemoveUser(file, "bob"); err != nil {
		t.Fatal(err)
	}
	auth.Reload(e.a)
	e.refused("bob", client.Credentials{Device: bob.Device}, protocol.CodeUnauthorized)
}

// The watcher re-reads the users file by itself, with no restart.
func TestAccountsFileReloadedByItself(t *testing.T) {
	file := usersFile(t, "alice", "pw-alice")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file}, nil)
	e.refused("dave", client.Credentials{Password: "pw-dave"}, protocol.CodeUnauthorized)
	if err := auth.AddUser(file, "dave", "pw-dave"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "dave can log in", func() bool {
		return e.login(e.dial(), "dave", "", client.Credentials{Password: "pw-dave"}).Success
	})
}

// A logged-in account cannot rename to another account without that account's password, nor to a free name.
func TestAccountsRename(t *testing.T) {
	file := usersFile(t, "alice", "pw-alice", "bob", "pw-bob")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file}, nil)
	c, _ := e.in("alice", client.Credentials{Password: "pw-alice"})
	expectRefusal(t, e.login(c, "bob", "", client.Credentials{}), protocol.CodeAuthRequired)
	expectRefusal(t, e.login(c, "zed", "", client.Credentials{}), protocol.CodeAuthRequired)
	if m := e.login(c, "bob", "", client.Credentials{Password: "pw-bob"}); !m.Success || m.Name != "bob" {
		t.Fatalf("rename to bob with bob's password: %+v", m)
	}
}

// Messages sent right behind a login whose password is being hashed wait for it, in order: the users request
// after the login is answered after the login reply, as a logged-in user's, not refused as not_logged_in.
func TestMessagesWaitForTheLogin(t *testing.T) {
	file := usersFile(t, "alice", "pw-alice")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file}, nil)
	c := e.dial()
	if err := c.SendLoginWith(e.ctx, "alice", "", client.Credentials{Password: "pw-alice"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := c.SendUsers(e.ctx, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < 4 {
		m, err := c.Read(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Type+"/"+m.Code)
	}
	want := "login/ users/ users/ users/"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

// While a login is checked its connection is not read: however much the client sends behind the login, nothing
// is refused, and all of it is acted on after the login reply, in order.
func TestMessagesWaitInOrder(t *testing.T) {
	file := usersFile(t, "alice", "pw-alice")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file, HashWorkers: 1}, nil)
	// Keep the only worker busy with another login, so that alice's is certainly still checked while her
	// messages arrive.
	blocker := e.dial()
	if err := blocker.SendLoginWith(e.ctx, "alice", "", client.Credentials{Password: "wrong"}); err != nil {
		t.Fatal(err)
	}
	c := e.dial()
	if err := c.SendLoginWith(e.ctx, "alice", "", client.Credentials{Password: "pw-alice"}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		if err := c.SendUsers(e.ctx, strings.Repeat("a", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	m, err := c.Read(e.ctx)
	if err != nil || m.Type != "login" || !m.Success {
		t.Fatalf("first reply %+v, %v: want the login", m, err)
	}
	for i := range n {
		m, err := c.Read(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != "users" || m.Query != strings.Repeat("a", i) {
			t.Fatalf("reply %d: %s %s %q, want the users list for %q", i, m.Type, m.Code, m.Query, strings.Repeat("a", i))
		}
	}
}

// A connection that closes while its login is checked never gets the name.
func TestCloseWhileChecking(t *testing.T) {
	file := usersFile(t, "alice", "pw-alice")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: file, HashWorkers: 1}, nil)
	for range 3 {
		c := e.dial()
		if err := c.SendLoginWith(e.ctx, "alice", "", client.Credentials{Password: "pw-alice"}); err != nil {
			t.Fatal(err)
		}
		if err := c.SendUsers(e.ctx, "", 0); err != nil {
			t.Fatal(err)
		}
		_ = c.CloseNow()
	}
	eventually(t, "every check done", func() bool { return auth.Pending(e.a) == 0 })
	eventually(t, "no connection left", func() bool { return e.srv.Connections() == 0 })
	if n := e.srv.Online(); n != 0 {
		t.Fatalf("%d users online after their connections closed during the check", n)
	}
	e.in("alice", client.Credentials{Password: "pw-alice"})
}

// The users commands' rules: no empty password, no two names differing only in case, no unknown user.
func TestUsersFileEditing(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "users.json")
	if err := auth.AddUser(file, "alice", ""); err == nil {
		t.Error("an empty password was taken")
	}
	if err := auth.AddUser(file, " alice ", "pw"); err != nil {
		t.Fatal(err)
	}
	if err := auth.AddUser(file, "ALICE", "pw"); err == nil {
		t.Error("ALICE was added beside alice")
	}
	if err := auth.AddUser(file, "bad\x00name", "pw"); err == nil {
		t.Error("an invalid name was taken")
	}
	if err := auth.SetPassword(file, "bob", "pw"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("passwd of an unknown user: %v", err)
	}
	if err := auth.RemoveUser(file, "bob"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("remove of an unknown user: %v", err)
	}
	list, err := auth.ListUsers(file)
	if err != nil || len(list) != 1 || list[0].Name != "alice" {
		t.Fatalf("list: %v, %v", list, err)
	}
}
