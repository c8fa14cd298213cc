package auth_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/protocol"
)

// An invite link lets one person in, for a limited time, under the name it fixes; used, expired or revoked, it
// lets nobody in, and revoking it ends the device credential it gave.
func TestInviteLinks(t *testing.T) {
	dir := t.TempDir()
	invites := filepath.Join(dir, "invites.json")
	e := start(t, auth.Config{Mode: auth.Password, Password: "family password", InvitesFile: invites}, nil)
	if info := e.authInfo(); info["mode"] != "password" || info["invites"] != true {
		t.Errorf("/auth.json = %v, want password with invites", info)
	}
	grandma, secret, err := auth.CreateInvite(invites, auth.InviteOptions{Name: "grandma", Note: "for grandma"})
	if err != nil {
		t.Fatal(err)
	}
	link := auth.InviteLink("https://call.example.org", secret)
	if link != "https://call.example.org/#invite="+secret {
		t.Errorf("link %q", link)
	}

	// The link's name is fixed: another name is refused (and the use is not spent).
	e.refused("mallory", client.Credentials{Invite: secret}, protocol.CodeUnauthorized)
	c, m := e.in("", client.Credentials{Invite: secret})
	if m.Name != "grandma" || m.Device == "" {
		t.Fatalf("invite login: name %q, device %q", m.Name, m.Device)
	}
	device := m.Device
	// Used once: a replay of the link is refused.
	m = e.refused("", client.Credentials{Invite: secret}, protocol.CodeUnauthorized)
	if !strings.Contains(m.Message, "used already") {
		t.Errorf("replayed invite: %q", m.Message)
	}
	// The invite's guest may not rename: the name is fixed.
	expectRefusal(t, e.login(c, "someone", "", client.Credentials{}), protocol.CodeUnauthorized)
	// Her device credential lets her in again (after her connection is gone).
	_ = c.Close()
	eventually(t, "grandma's name is freed", func() bool { return e.srv.Online() == 0 })
	c, _ = e.in("", client.Credentials{Device: device})
	_ = c.Close()
	eventually(t, "grandma's name is freed", func() bool { return e.srv.Online() == 0 })

	// Revoked: her device credential stops working.
	if err := auth.RevokeInvite(invites, grandma.ID); err != nil {
		t.Fatal(err)
	}
	auth.Reload(e.a)
	e.refused("", client.Credentials{Device: device}, protocol.CodeUnauthorized)

	// An invite for two, with names of their choice; it expires.
	_, two, err := auth.CreateInvite(invites, auth.InviteOptions{Uses: 2, Valid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.refused("", client.Credentials{Invite: two}, protocol.CodeInvalidName) // a name of their choice is needed
	guest, _ := e.in("uncle", client.Credentials{Invite: two})
	// A guest with a name of their own may rename.
	if m := e.login(guest, "uncle bob", "", client.Credentials{}); !m.Success {
		t.Fatalf("rename of a free-name guest: %s %s", m.Code, m.Message)
	}
	later := time.Now().Add(2 * time.Hour)
	auth.SetClock(e.a, func() time.Time { return later })
	m = e.refused("aunt", client.Credentials{Invite: two}, protocol.CodeExpired)
	if !strings.Contains(m.Message, "expired") {
		t.Errorf("expired invite: %q", m.Message)
	}
	auth.SetClock(e.a, time.Now)
	e.in("aunt", client.Credentials{Invite: two})
	e.refused("cousin", client.Credentials{Invite: two}, protocol.CodeUnauthorized) // both uses spent

	// Unknown (forged) secrets.
	e.refused("x", client.Credentials{Invite: flipLast(two)}, protocol.CodeUnauthorized)
	list, err := auth.ListInvites(invites)
	if err != nil || len(list) != 1 || list[0].Used != 2 {
		t.Fatalf("invites after: %+v, %v", list, err)
	}
}

// In the accounts mode an invited guest cannot take an account's name.
func TestInviteInAccountsMode(t *testing.T) {
	invites := filepath.Join(t.TempDir(), "invites.json")
	e := start(t, auth.Config{Mode: auth.Accounts, UsersFile: usersFile(t, "alice", "pw-alice"), InvitesFile: invites}, nil)
	_, secret, err := auth.CreateInvite(invites, auth.InviteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.refused("ALICE", client.Credentials{Invite: secret}, protocol.CodeNameTaken)
	// The refusal gave the use back.
	e.in("guest", client.Credentials{Invite: secret})
}

// An invite whose name is taken (someone is online under it) is not spent by the failed login.
func TestInviteNotSpentWhenNameTaken(t *testing.T) {
	invites := filepath.Join(t.TempDir(), "invites.json")
	e := start(t, auth.Config{Mode: auth.Password, Password: "pw", InvitesFile: invites}, nil)
	c, _ := e.in("grandma", client.Credentials{Password: "pw"})
	_, secret, err := auth.CreateInvite(invites, auth.InviteOptions{Name: "grandma"})
	if err != nil {
		t.Fatal(err)
	}
	e.refused("", client.Credentials{Invite: secret}, protocol.CodeNameTaken)
	_ = c.Close()
	eventually(t, "the name is freed", func() bool { return e.srv.Online() == 0 })
	e.in("", client.Credentials{Invite: secret})
}
