package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/redistest"
	"tandem/protocol"
)

// tandem user manages the users file a running server reads; the password comes from standard input here.
func TestUserCommand(t *testing.T) {
	dir := t.TempDir()
	env := func(k string) string { return map[string]string{"HOME": dir}[k] }
	user := func(stdin string, args ...string) (string, error) {
		var out bytes.Buffer
		args = append([]string{"user", "-data-dir", dir}, args...)
		var err error
		if stdin == "" { // through tandem's own command line
			err = run(context.Background(), args, env, &out, io.Discard)
		} else {
			err = runUser(args, env, strings.NewReader(stdin), &out, io.Discard)
		}
		return out.String(), err
	}
	if _, err := user("alice's pw\n", "add", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := user("bob's pw\n", "add", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := user("x\n", "add", "Alice"); err == nil {
		t.Error("Alice was added beside alice")
	}
	if _, err := user("\n", "add", "carol"); err == nil {
		t.Error("an empty password was taken")
	}
	out, err := user("", "list")
	if err != nil || !strings.HasPrefix(out, "alice\t") || !strings.Contains(out, "\nbob\t") {
		t.Fatalf("list: %q, %v", out, err)
	}
	if _, err := user("new pw\n", "passwd", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := user("", "remove", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := user("", "remove", "bob"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("removing bob twice: %v", err)
	}
	if out, _ := user("", "list"); strings.Contains(out, "bob") {
		t.Errorf("bob still listed: %q", out)
	}
	out, err = user("a server password\n", "hash")
	if err != nil || !strings.HasPrefix(out, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash: %q, %v", out, err)
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"add"}, {"list", "extra"}} {
		if _, err := user("", args...); err == nil {
			t.Errorf("tandem user %v: no error", args)
		}
	}

	// A server in the accounts mode on the same data directory lets alice in with her new password.
	out = startRun(t, []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", dir, "-auth", "accounts", "-log-level", "error"}, nil, "tandem: open http")
	url := wsURL(t, out)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expectLogin(t, ctx, url, "alice", client.Credentials{Password: "alice's pw"}, protocol.CodeUnauthorized)
	expectLogin(t, ctx, url, "alice", client.Credentials{Password: "new pw"}, "")
}

// tandem invite prints a link that a server in the password mode, on the same data directory, lets one login
// in with; list shows it used, revoke removes it.
func TestInviteCommand(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"TANDEM_AUTH": "password", "TANDEM_AUTH_PASSWORD": "family pw"}
	var out, info bytes.Buffer
	err := run(context.Background(), []string{"invite", "-data-dir", dir, "-name", "grandma", "-public-url", "https://call.example.org", "-note", "for grandma"},
		func(k string) string { return env[k] }, &out, &info)
	if err != nil {
		t.Fatal(err)
	}
	link := strings.TrimSpace(out.String())
	secret, ok := strings.CutPrefix(link, "https://call.example.org/#invite=")
	if !ok || secret == "" {
		t.Fatalf("link %q", link)
	}
	if !strings.Contains(info.String(), "grandma") || !strings.Contains(info.String(), "tandem invite revoke") {
		t.Errorf("invite says %q", info.String())
	}

	srvOut := startRun(t, []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", dir, "-log-level", "error"}, env, "tandem: open http")
	url := wsURL(t, srvOut)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expectLogin(t, ctx, url, "me", client.Credentials{}, protocol.CodeAuthRequired)
	expectLogin(t, ctx, url, "", client.Credentials{Invite: secret}, "")
	expectLogin(t, ctx, url, "", client.Credentials{Invite: secret}, protocol.CodeUnauthorized) // used once
	expectLogin(t, ctx, url, "me", client.Credentials{Password: "family pw"}, "")

	out.Reset()
	if err := run(context.Background(), []string{"invite", "-data-dir", dir, "list"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	fields := strings.Split(strings.TrimSpace(out.String()), "\t")
	if len(fields) < 3 || fields[1] != "grandma" || fields[2] != "1 of 1 used" {
		t.Fatalf("list: %q", out.String())
	}
	if err := run(context.Background(), []string{"invite", "-data-dir", dir, "revoke", fields[0]}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	_ = run(context.Background(), []string{"invite", "-data-dir", dir, "list"}, func(string) string { return "" }, &out, io.Discard)
	if out.Len() != 0 {
		t.Errorf("after revoke, list: %q", out.String())
	}
}

// The access flags and variables: the password from TANDEM_AUTH_PASSWORD or a file, /auth.json tells the mode,
// and misconfigurations stop tandem at start with a message.
func TestAccessFlags(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := writeFile(pwFile, "from a file\n"); err != nil {
		t.Fatal(err)
	}
	out := startRun(t, []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", dir, "-auth", "password", "-auth-password-file", pwFile, "-log-level", "error"}, nil, "tandem: open http")
	url := wsURL(t, out)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expectLogin(t, ctx, url, "alice", client.Credentials{Password: "from a file"}, "")
	resp, err := http.Get("http://" + strings.TrimPrefix(strings.TrimSuffix(url, "/"), "ws://") + "/auth.json")
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info["mode"] != "password" || info["invites"] != true {
		t.Errorf("/auth.json: %v", info)
	}

	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"unknown mode":        {[]string{"-auth", "secret"}, nil},
		"password without":    {[]string{"-auth", "password"}, nil},
		"password file gone":  {[]string{"-auth", "password", "-auth-password-file", filepath.Join(dir, "nope")}, nil},
		"jwt without key":     {[]string{"-auth", "jwt", "-auth-jwt-audience", "a", "-auth-jwt-issuer", "i"}, nil},
		"jwt without aud":     {[]string{"-auth", "jwt"}, map[string]string{"TANDEM_AUTH_JWT_SECRET": strings.Repeat("s", 32)}},
		"bad key":             {[]string{"-auth", "password"}, map[string]string{"TANDEM_AUTH_PASSWORD": "pw", "TANDEM_AUTH_KEY": "zz"}},
		"zero hash workers":   {[]string{"-auth", "password", "-auth-hash-workers", "0"}, map[string]string{"TANDEM_AUTH_PASSWORD": "pw"}},
		"bad password hash":   {[]string{"-auth", "password"}, map[string]string{"TANDEM_AUTH_PASSWORD": "$argon2id$v=19$m=1,t=1,p=1$x$y"}},
		"jwt with alg none":   {[]string{"-auth", "jwt", "-auth-jwt-audience", "a", "-auth-jwt-issuer", "i", "-auth-jwt-algs", "none"}, map[string]string{"TANDEM_AUTH_JWT_SECRET": strings.Repeat("s", 32)}},
		"jwt with a bad JWKS": {[]string{"-auth", "jwt", "-auth-jwt-audience", "a", "-auth-jwt-issuer", "i", "-auth-jwks", filepath.Join(dir, "nope.json")}, nil},
	} {
		args := append([]string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", t.TempDir()}, tc.args...)
		if err := run(context.Background(), args, func(k string) string { return tc.env[k] }, io.Discard, io.Discard); err == nil {
			t.Errorf("%s: tandem started", name)
		}
	}
}

// In the open mode tandem warns when it can be reached from the internet, and says how to close it.
func TestOpenModeWarnsWhenPublic(t *testing.T) {
	a, err := auth.New(auth.Config{Mode: auth.Open})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		addr net.Addr
		opts netOptions
		warn bool
	}{
		{"loopback", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090}, netOptions{}, false},
		{"private", &net.TCPAddr{IP: net.IPv4(192, 168, 1, 20), Port: 9090}, netOptions{}, false},
		{"public address", &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 9090}, netOptions{}, true},
		{"acme domain", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}, netOptions{acmeDomains: "call.example.org"}, true},
		{"turn public ip", &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 9090}, netOptions{turnPublicIP: "203.0.113.9"}, true},
	} {
		var logs bytes.Buffer
		warnIfOpen(a, tc.addr, &tc.opts, slog.New(slog.NewTextHandler(&logs, nil)))
		got := strings.Contains(logs.String(), "open to anyone")
		if got != tc.warn {
			t.Errorf("%s: warned %v, want %v: %s", tc.name, got, tc.warn, logs.String())
		}
		if got && !strings.Contains(logs.String(), "-auth password") {
			t.Errorf("%s: the warning does not say how to close it: %s", tc.name, logs.String())
		}
	}
	// Not in the other modes.
	p, err := auth.New(auth.Config{Mode: auth.Password, Password: "pw", Key: []byte("0123456789abcdef"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var logs bytes.Buffer
	warnIfOpen(p, &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 9090}, &netOptions{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if logs.Len() != 0 {
		t.Errorf("password mode warned: %s", logs.String())
	}
}

func wsURL(t *testing.T, out string) string {
	t.Helper()
	m := openURL.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no URL in:\n%s", out)
	}
	return "ws://" + strings.Replace(m[2], "localhost", "127.0.0.1", 1) + "/"
}

// expectLogin logs a new connection in with cred and checks the result: code "" for success.
func expectLogin(t *testing.T, ctx context.Context, url, name string, cred client.Credentials, code string) {
	t.Helper()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	m, err := c.LoginWith(ctx, name, "", cred)
	switch {
	case m == nil:
		t.Fatalf("login %q: %v", name, err)
	case code == "" && !m.Success:
		t.Fatalf("login %q refused: %s %s", name, m.Code, m.Message)
	case code != "" && m.Code != code:
		t.Fatalf("login %q: %+v, want %s", name, m, code)
	}
}

func writeFile(file, s string) error { return os.WriteFile(file, []byte(s), 0o600) }

// -embed-origins (here from TANDEM_EMBED_ORIGINS) lets the sites listed frame the web client and post it a token:
// the page's frame-ancestors names them and /auth.json tells the page; -trusted-proxies is read as a list. Bad
// values stop tandem at start with an error that names them.
func TestEmbedAndProxyFlags(t *testing.T) {
	env := map[string]string{"TANDEM_EMBED_ORIGINS": "https://App.example.org/, http://127.0.0.1:8081", "TANDEM_AUTH_JWT_SECRET": strings.Repeat("s", 32)}
	out := startRun(t, []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", t.TempDir(), "-log-level", "error",
		"-auth", "jwt", "-auth-jwt-audience", "a", "-auth-jwt-issuer", "i", "-allowed-origins", "https://other.example.org",
		"-trusted-proxies", "127.0.0.1, 10.0.0.0/8"}, env, "tandem: open http")
	base := "http://" + strings.TrimPrefix(strings.TrimSuffix(wsURL(t, out), "/"), "ws://")
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors https://app.example.org http://127.0.0.1:8081") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	resp, err = http.Get(base + "/auth.json")
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Embedders []string }
	_ = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if got := strings.Join(info.Embedders, " "); got != "https://app.example.org http://127.0.0.1:8081 https://other.example.org" {
		t.Errorf("/auth.json embedders: %q", got)
	}

	for _, tc := range []struct{ args []string }{
		{[]string{"-embed-origins", "http://app.example.org"}},
		{[]string{"-embed-origins", "https://app.example.org/path"}},
		{[]string{"-trusted-proxies", "proxy.example.org"}},
		{[]string{"-trusted-proxies", "10.0.0.0/40"}},
	} {
		args := append([]string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", t.TempDir()}, tc.args...)
		err := run(context.Background(), args, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.args[1]) || !strings.Contains(err.Error(), tc.args[0]) {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
}

// A cluster node talks to Redis through one client, for the cluster and for the login state the nodes share:
// after a login checked against the shared state, Redis has no connection of the access control's own.
func TestOneRedisClient(t *testing.T) {
	rs := redistest.Start(t)
	env := map[string]string{"TANDEM_REDIS": rs.URL(), "TANDEM_NODE_ID": "n1", "TANDEM_AUTH_PASSWORD": "pw"}
	out := startRun(t, []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false", "-data-dir", t.TempDir(),
		"-log-level", "error", "-auth", "password", "-limit-loopback"}, env, "tandem: open http")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expectLogin(t, ctx, wsURL(t, out), "mallory", client.Credentials{Password: "guess"}, protocol.CodeUnauthorized)
	// The failure is written to Redis by the access control (its key shows it did reach Redis).
	deadline := time.Now().Add(10 * time.Second)
	for rs.Do("EXISTS", "tandem:auth:fa:00000000000000000000ffff7f000001") != ":1" {
		if time.Now().After(deadline) {
			t.Fatal("the failed login never reached Redis")
		}
		time.Sleep(20 * time.Millisecond)
	}
	list := clientList(t, rs.Socket())
	if strings.Contains(list, "name=tandem-auth") || !strings.Contains(list, "name=tandem-n1") {
		t.Errorf("Redis's clients:\n%s", list)
	}
}

// clientList is Redis's CLIENT LIST: a line for each connection, with its name.
func clientList(t *testing.T, sock string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	n, convErr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil || convErr != nil {
		t.Fatalf("CLIENT LIST: %q, %v", head, err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	return string(body)
}
