package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"tandem/protocol"
)

// The invites file: JSON, one record per invite link, edited by `tandem invite` (create, revoke) and by the
// server, which counts the uses. A link's secret is shown once, when it is made; the file keeps only its SHA-256,
// so the file does not let anyone in.
//
//	{"invites": [{"id": "k3v9x2", "hash": "...", "name": "grandma", "expires": "...", "uses": 1, "used": 0}]}

type invitesFile struct {
	Invites []Invite `json:"invites"`
}

// Invite is one invite link's record.
type Invite struct {
	ID      string    `json:"id"`             // short, for `tandem invite revoke`
	Hash    string    `json:"hash"`           // hex SHA-256 of the link's secret
	Name    string    `json:"name,omitempty"` // the name the guest gets; "": one they choose
	Note    string    `json:"note,omitempty"` // for the operator: who it is for
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"` // the link lets nobody in after this
	Uses    int       `json:"uses"`    // logins it allows
	Used    int       `json:"used"`    // logins it has let in
}

// InviteOptions are what `tandem invite` asks for.
type InviteOptions struct {
	Name  string        // a fixed guest name; "": the guest chooses
	Note  string        // who it is for
	Valid time.Duration // how long the link works
	Uses  int           // how many logins it allows
}

// Defaults of an invite.
const (
	DefaultInviteValid = 7 * 24 * time.Hour
	DefaultInviteUses  = 1
)

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func readInvites(file string) (invitesFile, error) {
	var f invitesFile
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("auth: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("auth: invites file %s: %w", file, err)
	}
	return f, nil
}

func editInvites(file string, edit func(f *invitesFile) error) error {
	return withFileLock(file, func() error {
		f, err := readInvites(file)
		if err != nil {
			return err
		}
		if err := edit(&f); err != nil {
			return err
		}
		data, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		return writeFileAtomic(file, append(data, '\n'), 0o600)
	})
}

// CreateInvite adds an invite to the invites file and returns it with its secret, which goes into the link
// (InviteLink) and is not kept anywhere.
func CreateInvite(file string, o InviteOptions) (Invite, string, error) {
	if o.Name != "" {
		n, err := protocol.ValidateName([]byte(o.Name))
		if err != nil {
			return Invite{}, "", fmt.Errorf("auth: the invite's name: %w", err)
		}
		o.Name = n
	}
	if o.Valid <= 0 {
		o.Valid = DefaultInviteValid
	}
	if o.Uses <= 0 {
		o.Uses = DefaultInviteUses
	}
	var secret [16]byte
	var id [4]byte
	_, _ = rand.Read(secret[:])
	_, _ = rand.Read(id[:])
	s := base64.RawURLEncoding.EncodeToString(secret[:])
	now := time.Now().UTC().Truncate(time.Second)
	inv := Invite{ID: hex.EncodeToString(id[:]), Hash: hashSecret(s), Name: o.Name, Note: o.Note, Created: now,
		Expires: now.Add(o.Valid), Uses: o.Uses}
	err := editInvites(file, func(f *invitesFile) error {
		f.Invites = append(f.Invites, inv)
		return nil
	})
	return inv, s, err
}

// InviteLink is the link that opens the web client at base (the server's public URL) with the invite secret:
// in the fragment, which browsers send to no server and keep out of Referer headers.
func InviteLink(base, secret string) string {
	if base == "" || base[len(base)-1] != '/' {
		base += "/"
	}
	return base + "#invite=" + secret
}

// ListInvites returns the invites of the file, the newest last.
func ListInvites(file string) ([]Invite, error) {
	f, err := readInvites(file)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(f.Invites, func(a, b Invite) int { return a.Created.Compare(b.Created) })
	return f.Invites, nil
}

// ErrNoSuchInvite is returned for an invite id that is not in the invites file.
var ErrNoSuchInvite = errors.New("no such invite")

// RevokeInvite removes an invite: its link lets nobody in any more, and the device credentials of those who
// came in by it stop working.
func RevokeInvite(file, id string) error {
	return editInvites(file, func(f *invitesFile) error {
		i := slices.IndexFunc(f.Invites, func(inv Invite) bool { return inv.ID == id })
		if i < 0 {
			return fmt.Errorf("auth: %q: %w", id, ErrNoSuchInvite)
		}
		f.Invites = slices.Delete(f.Invites, i, i+1)
		return nil
	})
}

// Why an invite does not let a login in.
var (
	errInviteUnknown = errors.New("this invite link is not valid (it may have been revoked)")
	errInviteExpired = errors.New("this invite link has expired")
	errInviteUsed    = errors.New("this invite link has been used already")
)

// useInvite counts one use of the invite whose secret is given, in the file, and returns it; it fails when the
// invite is unknown, expired or used up. It reads and writes the file: call it on the pool.
func useInvite(file, secret string, now time.Time) (Invite, error) {
	var inv Invite
	h := hashSecret(secret)
	err := editInvites(file, func(f *invitesFile) error {
		i := slices.IndexFunc(f.Invites, func(inv Invite) bool { return inv.Hash == h })
		switch {
		case i < 0:
			return errInviteUnknown
		case !now.Before(f.Invites[i].Expires):
			return errInviteExpired
		case f.Invites[i].Used >= f.Invites[i].Uses:
			return errInviteUsed
		}
		f.Invites[i].Used++
		inv = f.Invites[i]
		return nil
	})
	return inv, err
}

// findInvite returns the invite whose secret is given, from the file, without counting a use (the cluster's
// Redis counts them); it fails when the invite is unknown or expired. It reads the file: call it on the pool.
func findInvite(file, secret string, now time.Time) (Invite, error) {
	f, err := readInvites(file)
	if err != nil {
		return Invite{}, err
	}
	h := hashSecret(secret)
	i := slices.IndexFunc(f.Invites, func(inv Invite) bool { return inv.Hash == h })
	switch {
	case i < 0:
		return Invite{}, errInviteUnknown
	case !now.Before(f.Invites[i].Expires):
		return Invite{}, errInviteExpired
	}
	return f.Invites[i], nil
}

// refundInvite gives back a use of invite id that let in a login which then failed (its name was taken).
func refundInvite(file, id string) error {
	return editInvites(file, func(f *invitesFile) error {
		if i := slices.IndexFunc(f.Invites, func(inv Invite) bool { return inv.ID == id }); i >= 0 && f.Invites[i].Used > 0 {
			f.Invites[i].Used--
		}
		return nil
	})
}
