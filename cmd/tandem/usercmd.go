package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tandem/internal/auth"
	"tandem/internal/cli"
)

// subcommand returns the subcommand args name (tandem user ..., tandem invite ...), or nil.
func subcommand(args []string) func(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return nil
	}
	switch args[0] {
	case "user":
		return runUser
	case "invite":
		return runInvite
	}
	return nil
}

// fileFlags parses the flags the subcommands share (-data-dir and the file's own flag, with their TANDEM_*
// variables) and returns the file and the arguments left.
func fileFlags(name, fileFlag, fileName, usage string, args []string, getenv func(string) string, stderr io.Writer, more func(fs *flag.FlagSet)) (string, []string, error) {
	fs := flag.NewFlagSet("tandem "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(getenv), "tandem's data directory, where the server looks for "+fileName)
	file := fs.String(fileFlag, "", "the file (empty: "+fileName+" in -data-dir)")
	if more != nil {
		more(fs)
	}
	if err := cli.Parse(fs, "TANDEM_", usage, args, getenv); err != nil {
		return "", nil, err
	}
	f := *file
	if f == "" {
		f = filepath.Join(*dataDir, fileName)
	}
	return f, fs.Args(), nil
}

const userUsage = `tandem user manages the accounts of the accounts mode (-auth accounts), in the users file that a running
server re-reads when it changes:

  tandem user add NAME      add an account (asks for its password)
  tandem user passwd NAME   change an account's password (its devices must sign in again)
  tandem user remove NAME   remove an account
  tandem user list          list the accounts
  tandem user hash          print the Argon2id hash of a password, for -auth-password-file

The password is read from the terminal without echo, or as one line from standard input.`

func runUser(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	file, rest, err := fileFlags("user", "auth-users", "users.json", userUsage, args[1:], getenv, stderr, nil)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return errors.New("tandem user: say add, passwd, remove, list or hash (tandem user -h)")
	}
	cmd, rest := rest[0], rest[1:]
	need := func(n int) error {
		if len(rest) != n {
			return fmt.Errorf("tandem user %s: want %d argument(s), got %q", cmd, n, rest)
		}
		return nil
	}
	switch cmd {
	case "add", "passwd":
		if err := need(1); err != nil {
			return err
		}
		pw, err := readPassword(stdin, stderr, "password for "+rest[0])
		if err != nil {
			return err
		}
		if cmd == "add" {
			err = auth.AddUser(file, rest[0], pw)
		} else {
			err = auth.SetPassword(file, rest[0], pw)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tandem: %s %s in %s\n", map[string]string{"add": "added", "passwd": "changed the password of"}[cmd], rest[0], file)
	case "remove":
		if err := need(1); err != nil {
			return err
		}
		if err := auth.RemoveUser(file, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tandem: removed %s from %s\n", rest[0], file)
	case "list":
		if err := need(0); err != nil {
			return err
		}
		list, err := auth.ListUsers(file)
		if err != nil {
			return err
		}
		for _, a := range list {
			fmt.Fprintf(stdout, "%s\t(password set %s)\n", a.Name, a.Changed.Format(time.DateOnly))
		}
	case "hash":
		if err := need(0); err != nil {
			return err
		}
		pw, err := readPassword(stdin, stderr, "password")
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, auth.HashPassword(pw))
	default:
		return fmt.Errorf("tandem user: unknown command %q: say add, passwd, remove, list or hash", cmd)
	}
	return nil
}

const inviteUsage = `tandem invite makes invite links for the password and accounts modes: a link lets one person in (or
-uses people) until it expires, without the password, under the name it fixes (-name) or one they choose.

  tandem invite [-name NAME] [-for 168h] [-uses 1] [-note TEXT] [-public-url https://call.example.org/]
  tandem invite list
  tandem invite revoke ID   the link lets nobody in any more, and those who came by it must sign in again`

func runInvite(args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	var o auth.InviteOptions
	var base string
	file, rest, err := fileFlags("invite", "auth-invites", "invites.json", inviteUsage, args[1:], getenv, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&o.Name, "name", "", "the name the guest gets (empty: one they choose)")
		fs.StringVar(&o.Note, "note", "", "who the link is for, for tandem invite list")
		fs.DurationVar(&o.Valid, "for", auth.DefaultInviteValid, "how long the link works")
		fs.IntVar(&o.Uses, "uses", auth.DefaultInviteUses, "how many logins the link allows")
		fs.StringVar(&base, "public-url", "http://localhost:9090/", "the server's address as the guest opens it (as tandem's -public-url)")
	})
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 0:
		if o.Valid <= 0 || o.Uses <= 0 {
			return errors.New("tandem invite: -for and -uses must be positive")
		}
		inv, secret, err := auth.CreateInvite(file, o)
		if err != nil {
			return err
		}
		who := "a name of their choice"
		if inv.Name != "" {
			who = inv.Name
		}
		fmt.Fprintf(stdout, "%s\n", auth.InviteLink(base, secret))
		fmt.Fprintf(stderr, "tandem: invite %s lets %d login(s) in as %s until %s (tandem invite revoke %s ends it)\n",
			inv.ID, inv.Uses, who, inv.Expires.Local().Format(time.DateTime), inv.ID)
	case rest[0] == "list" && len(rest) == 1:
		list, err := auth.ListInvites(file)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, inv := range list {
			state := fmt.Sprintf("%d of %d used", inv.Used, inv.Uses)
			if !now.Before(inv.Expires) {
				state += ", expired"
			}
			name := inv.Name
			if name == "" {
				name = "(their choice)"
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\tuntil %s\t%s\n", inv.ID, name, state, inv.Expires.Local().Format(time.DateTime), inv.Note)
		}
	case rest[0] == "revoke" && len(rest) == 2:
		if err := auth.RevokeInvite(file, rest[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tandem: revoked invite %s\n", rest[1])
	default:
		return fmt.Errorf("tandem invite: unknown command %q (tandem invite -h)", strings.Join(rest, " "))
	}
	return nil
}

// readPassword reads a password: twice from a terminal, without echo; else one line of stdin.
func readPassword(stdin io.Reader, stderr io.Writer, what string) (string, error) {
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		fmt.Fprintf(stderr, "%s: ", what)
		a, err := readNoEcho(f)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(stderr, "again: ")
		b, err := readNoEcho(f)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if a != b {
			return "", errors.New("the two passwords differ")
		}
		return a, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", fmt.Errorf("reading the password from standard input: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("the password must not be empty")
	}
	return pw, nil
}
