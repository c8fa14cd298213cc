package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/internal/server"
)

// withAuth starts the server with an access mode; the Auth is closed after the server stops.
func withAuth(t *testing.T, cfg auth.Config) func(*server.Config) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close) // registered before the server's cleanup, so it runs after it
	return func(c *server.Config) { c.Auth = a }
}

var e2eKey = []byte("the e2e tests' device key, 32 b.")

// typeLogin fills the login form (name, and password when the field shows) and submits it, as a person would.
func (p *page) typeLogin(name, password string) {
	p.t.Helper()
	p.waitFor("the login form", `document.body.dataset.view === 'login' && !document.querySelector('#login-view').hidden && !document.querySelector('#login-button').disabled`)
	p.must(fmt.Sprintf(`document.querySelector('#login-name').value = %s; document.querySelector('#login-password').value = %s`, jsString(name), jsString(password)))
	p.must(`document.querySelector('#login-form').requestSubmit()`)
}

// storageHas reports whether any value the page keeps in localStorage or sessionStorage contains s.
func (p *page) storageHas(s string) bool {
	return value[bool](p, fmt.Sprintf(`(() => {
		for (const st of [localStorage, sessionStorage]) for (let i = 0; i < st.length; i++) if ((st.getItem(st.key(i)) || '').includes(%s)) return true;
		return false; })()`, jsString(s)))
}

func (srv *tandem) waitOnline(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for srv.server.Online() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d users online, want %d", srv.server.Online(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The password mode in the browser: the page asks for the password (it learnt the mode from /auth.json), says
// so when it is wrong, keeps no password anywhere, and brings the device back without it.
func TestPasswordLoginInBrowser(t *testing.T) {
	const password = "correct horse battery staple"
	srv := startTandem(t, withAuth(t, auth.Config{Mode: auth.Password, Password: password, Key: e2eKey}))
	alice := openPage(t, "alice", srv.url+"/")
	alice.waitFor("the password field", `!document.querySelector('#login-password-row').hidden && document.querySelector('#login-intro').textContent.includes('password')`)

	alice.typeLogin("alice", "")
	alice.waitFor("the missing password said", `document.querySelector('#login-error').textContent.includes('needs its password')`)
	alice.typeLogin("alice", "Correct horse")
	alice.waitFor("the wrong password said", `document.querySelector('#login-error').textContent.includes('Wrong password')`)
	alice.typeLogin("alice", password)
	alice.waitFor("the call page", `document.body.dataset.view === 'call' && tandem.name === 'alice' && tandem.signaling === 'online'`)
	if alice.storageHas(password) || alice.storageHas("Correct horse") {
		t.Fatal("the page keeps the password in storage")
	}
	if !value[bool](alice, `document.querySelector('#login-password').value === ''`) {
		t.Error("the password is still in the form")
	}
	if !value[bool](alice, `!!JSON.parse(localStorage.getItem('tandem.device') || 'null')`) {
		t.Fatal("no device credential kept")
	}

	// The same device comes back later (a new tab once the first is gone): in at once, without the password.
	alice.navigate("about:blank")
	srv.waitOnline(t, 0)
	again := openPage(t, "alice again", srv.url+"/")
	again.waitFor("the call page without a password", `document.body.dataset.view === 'call' && tandem.name === 'alice' && tandem.signaling === 'online'`)

	// Signing out forgets the device: the next visit asks for the password.
	again.click("#logout-button")
	again.waitFor("the login page with the password field", `document.body.dataset.view === 'login' && !document.querySelector('#login-password-row').hidden && localStorage.getItem('tandem.device') === null`)
}

// An invite link opens straight into the page under the name it fixes; used again, or expired, it says so; an
// invite for a name of one's own asks for the name only.
func TestInviteLinkInBrowser(t *testing.T) {
	invites := filepath.Join(t.TempDir(), "invites.json")
	srv := startTandem(t, withAuth(t, auth.Config{Mode: auth.Password, Password: "family password", Key: e2eKey, InvitesFile: invites}))
	_, secret, err := auth.CreateInvite(invites, auth.InviteOptions{Name: "grandma"})
	if err != nil {
		t.Fatal(err)
	}
	grandma := openPage(t, "grandma", srv.url+"/#invite="+secret)
	grandma.waitFor("the call page", `document.body.dataset.view === 'call' && tandem.name === 'grandma' && tandem.signaling === 'online'`)
	if h := value[string](grandma, `location.hash`); h != "" {
		t.Errorf("the invite's secret stays in the address: %q", h)
	}

	// The link again (forwarded to someone else, say): used up.
	other := openPage(t, "other", srv.url+"/#invite="+secret, asAnotherDevice())
	other.waitFor("the used invite said", `document.body.dataset.view === 'login' && document.querySelector('#login-error').textContent.includes('cannot be used any more')`)
	other.waitFor("the password field instead", `!document.querySelector('#login-password-row').hidden`)

	// An expired link.
	_, old, err := auth.CreateInvite(invites, auth.InviteOptions{Valid: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	late := openPage(t, "late", srv.url+"/#invite="+old, asAnotherDevice())
	late.waitFor("the expired invite said", `document.querySelector('#login-error').textContent.includes('has expired')`)

	// A link for a name of one's own: the page asks for the name, not the password.
	_, free, err := auth.CreateInvite(invites, auth.InviteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uncle := openPage(t, "uncle", srv.url+"/#invite="+free, asAnotherDevice())
	uncle.waitFor("the invitation's note", `document.querySelector('#login-note').textContent.includes('invited') && document.querySelector('#login-password-row').hidden && document.querySelector('#login-error').textContent.includes('Choose the name')`)
	uncle.typeLogin("uncle bob", "")
	uncle.waitFor("the call page", `document.body.dataset.view === 'call' && tandem.name === 'uncle bob'`)
}

// A token from the operator's app: in the address (#jwt=), or posted by the page that embeds tandem; an expired
// one is said clearly.
func TestTokenLoginInBrowser(t *testing.T) {
	secret := []byte("the app's secret for the e2e tests, 32+")
	const aud, iss = "https://call.example.org", "https://app.example.org"
	embedder := startEmbedder(t)
	srv := startTandem(t, withAuth(t, auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{Secret: secret, Audience: aud, Issuer: iss}}),
		func(c *server.Config) { c.AllowedOrigins = []string{embedder.origin} })
	token := func(name string, exp time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": name, "aud": aud, "iss": iss, "iat": time.Now().Unix(), "exp": time.Now().Add(exp).Unix(),
		}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	alice := openPage(t, "alice", srv.url+"/#jwt="+token("alice", time.Hour))
	alice.waitFor("the call page", `document.body.dataset.view === 'call' && tandem.name === 'alice' && tandem.signaling === 'online'`)
	if h := value[string](alice, `location.hash`); h != "" {
		t.Errorf("the token stays in the address: %q", h)
	}

	late := openPage(t, "late", srv.url+"/#jwt="+token("bob", -time.Hour))
	late.waitFor("the expired token said", `document.body.dataset.view === 'login' && document.querySelector('#login-error').textContent.includes('has expired')`)
	plain := openPage(t, "plain", srv.url+"/")
	plain.waitFor("the page says to come from the app", `document.querySelector('#login-intro').textContent.includes('signed in through its app') && document.querySelector('#login-name-row').hidden && document.querySelector('#login-button').hidden`)

	// The app's page opens tandem in a window of its own and posts the token to it when it says it is ready.
	embedder.token = token("carol", time.Hour)
	app := openPage(t, "app", embedder.origin+"/?tandem="+srv.url+"/")
	app.clickAt("#open") // a person's click: the browser lets the page open a window
	deadline := time.Now().Add(wait)
	for !online(t, srv, token("dave", time.Hour), "carol") {
		if time.Now().After(deadline) {
			t.Fatal("the app's page did not sign carol in")
		}
		time.Sleep(100 * time.Millisecond)
	}
	app.must(`window.tandemWindow.close()`)
}

// online reports whether name is online, as a client that signs in with tok sees it.
func online(t *testing.T, srv *tandem, tok, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, srv.wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, err := c.LoginWith(ctx, "", "", client.Credentials{JWT: tok}); err != nil {
		t.Fatal(err)
	}
	if err := c.SendUsers(ctx, name, 0); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitFor(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range m.Users {
		if u.Name == name {
			return true
		}
	}
	return false
}

// embedder is the operator's app: a page on another origin that opens tandem in a window of its own and posts it
// a token when tandem says it is ready.
type embedder struct {
	origin string
	token  string
}

func startEmbedder(t *testing.T) *embedder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &embedder{origin: "http://" + ln.Addr().String()}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.Query().Get("tandem")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>app</title>
<button id="open">Call</button>
<script>
document.getElementById('open').onclick = () => { window.tandemWindow = window.open(%s); };
window.addEventListener('message', (ev) => {
  if (ev.data && ev.data.type === 'tandem-ready' && ev.origin === %s) {
    ev.source.postMessage({ type: 'tandem-jwt', jwt: %s }, ev.origin);
  }
});
</script>`, jsString(target), jsString(strings.TrimSuffix(target, "/")), jsString(e.token))
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return e
}
