package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"tandem/protocol"
)

// The users file of the accounts mode: JSON, one entry per account with its Argon2id hash, edited by
// `tandem user add|remove|passwd` and re-read by a running server when it changes.
//
//	{"users": {"alice": {"hash": "$argon2id$v=19$m=19456,t=2,p=1$...", "changed": "2026-09-01T10:00:00Z"}}}

type usersFile struct {
	Users map[string]account `json:"users"`
}

type account struct {
	Hash    string    `json:"hash"`
	Changed time.Time `json:"changed"`
}

// Account is one account, as `tandem user list` shows it.
type Account struct {
	Name    string
	Changed time.Time
}

// readUsers reads a users file; a missing file is an empty one.
func readUsers(file string) (usersFile, error) {
	u := usersFile{Users: map[string]account{}}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return u, nil
	}
	if err != nil {
		return u, fmt.Errorf("auth: %w", err)
	}
	if err := json.Unmarshal(data, &u); err != nil {
		return u, fmt.Errorf("auth: users file %s: %w", file, err)
	}
	if u.Users == nil {
		u.Users = map[string]account{}
	}
	for name, a := range u.Users {
		if n, err := protocol.ValidateName([]byte(name)); err != nil || n != name {
			return u, fmt.Errorf("auth: users file %s: %q is not a valid name", file, name)
		}
		if _, err := parseHash(a.Hash); err != nil {
			return u, fmt.Errorf("auth: users file %s: user %q: %w", file, name, err)
		}
	}
	return u, nil
}

func writeUsers(file string, u usersFile) error {
	data, err := json.MarshalIndent(u, "", "  ")
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return writeFileAtomic(file, append(data, '\n'), 0o600)
}

// editUsers reads file, lets edit change it, and writes it back, under the file's lock.
func editUsers(file string, edit func(u *usersFile) error) error {
	return withFileLock(file, func() error {
		u, err := readUsers(file)
		if err != nil {
			return err
		}
		if err := edit(&u); err != nil {
			return err
		}
		return writeUsers(file, u)
	})
}

// ErrNoSuchUser is returned for an account that is not in the users file.
var ErrNoSuchUser = errors.New("no such user")

// AddUser adds an account to the users file (creating the file), with password hashed. A name that differs from
// an existing one only in case is refused: the two would look the same in a user list.
func AddUser(file, name, password string) error {
	n, err := protocol.ValidateName([]byte(name))
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if password == "" {
		return errors.New("auth: the password must not be empty")
	}
	hash := HashPassword(password)
	return editUsers(file, func(u *usersFile) error {
		for other := range u.Users {
			if strings.EqualFold(other, n) {
				return fmt.Errorf("auth: user %q exists already", other)
			}
		}
		u.Users[n] = account{Hash: hash, Changed: time.Now().UTC().Truncate(time.Second)}
		return nil
	})
}

// SetPassword changes an account's password; the device credentials it signed in with stop working.
func SetPassword(file, name, password string) error {
	if password == "" {
		return errors.New("auth: the password must not be empty")
	}
	hash := HashPassword(password)
	return editUsers(file, func(u *usersFile) error {
		if _, ok := u.Users[name]; !ok {
			return fmt.Errorf("auth: %q: %w", name, ErrNoSuchUser)
		}
		u.Users[name] = account{Hash: hash, Changed: time.Now().UTC().Truncate(time.Second)}
		return nil
	})
}

// RemoveUser removes an account; its device credentials stop working (a user online stays until they leave).
func RemoveUser(file, name string) error {
	return editUsers(file, func(u *usersFile) error {
		if _, ok := u.Users[name]; !ok {
			return fmt.Errorf("auth: %q: %w", name, ErrNoSuchUser)
		}
		delete(u.Users, name)
		return nil
	})
}

// ListUsers returns the accounts of the users file, by name.
func ListUsers(file string) ([]Account, error) {
	u, err := readUsers(file)
	if err != nil {
		return nil, err
	}
	list := make([]Account, 0, len(u.Users))
	for name, a := range u.Users {
		list = append(list, Account{Name: name, Changed: a.Changed})
	}
	slices.SortFunc(list, func(a, b Account) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}
