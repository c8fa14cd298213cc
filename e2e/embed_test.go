package e2e

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tandem/internal/auth"
	"tandem/internal/server"
	"tandem/internal/web"
)

// servePage serves the HTML page returns (for each request) on a new loopback origin until the test ends, and
// returns that origin.
func servePage(t *testing.T, page func(r *http.Request) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page(r))
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
	return "http://" + ln.Addr().String()
}

// The operator's app frames tandem (-embed-origins lists it) and posts it a token when tandem says it is ready:
// the user is signed in inside the frame.
func TestEmbeddedInIframe(t *testing.T) {
	carol := e2eToken(t, "carol")
	app := servePage(t, func(r *http.Request) string {
		tandemOrigin := r.URL.Query().Get("tandem") // tandem's own origin, given in the page's address
		return fmt.Sprintf(`<!doctype html><title>app</title>
<iframe id="tandem" src="%[1]s/" allow="camera; microphone" style="width: 800px; height: 600px"></iframe>
<script>
window.seen = [];
const tandem = document.getElementById('tandem');
window.addEventListener('message', (ev) => {
  window.seen.push(ev.origin + ' ' + (ev.data && ev.data.type));
  if (ev.origin === %[2]s && ev.source === tandem.contentWindow && ev.data && ev.data.type === 'tandem-ready') {
    tandem.contentWindow.postMessage({ type: 'tandem-jwt', jwt: %[3]s }, %[2]s);
  }
});
</script>`, tandemOrigin, jsString(tandemOrigin), jsString(carol))
	})
	srv := startEmbeddable(t, app)
	page := openPage(t, "app", app+"/?tandem="+srv.url)
	page.waitFor("tandem in the frame said it was ready", fmt.Sprintf(`window.seen.includes(%s)`, jsString(srv.url+" tandem-ready")))
	deadline := time.Now().Add(wait)
	for !online(t, srv, e2eToken(t, "dave"), "carol") {
		if time.Now().After(deadline) {
			t.Fatal("the app's token did not sign carol in inside the frame")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The page takes a posted token only from an origin the server lists: a page of another origin (a site that
// opened tandem, or that tandem's page opened) that posts one is ignored, one of the app's origin is taken. Each
// token comes from a window tandem's page opens (a person's click), and a listener of the test, which the page
// runs after its own, notes whether the page took it (its sign-in button shows at once when it holds a token).
func TestTokensOnlyFromEmbedders(t *testing.T) {
	poster := func(r *http.Request) string {
		return fmt.Sprintf(`<!doctype html><title>poster</title><script>
opener.postMessage({ type: 'tandem-jwt', jwt: %s }, '*');
window.close();
</script>`, jsString(e2eToken(t, r.URL.Query().Get("name"))))
	}
	stranger, app := servePage(t, poster), servePage(t, poster)
	srv := startEmbeddable(t, app)
	p := openPage(t, "tandem", srv.url+"/")
	p.waitFor("the page says to come from the app", `document.body.dataset.view === 'login' && document.querySelector('#login-button').hidden`)
	p.must(`window.tokens = []; window.addEventListener('message', (ev) => {
  if (ev.data && ev.data.type === 'tandem-jwt') window.tokens.push(ev.origin + (document.querySelector('#login-button').hidden ? ' ignored' : ' taken'));
})`)
	frame := func(origin, name string) {
		p.must(fmt.Sprintf(`{ const b = document.createElement('button'); b.id = 'open-poster'; b.textContent = 'open';
  b.style = 'position: fixed; top: 0; left: 0; z-index: 99999';
  b.addEventListener('click', () => { window.open(%s); b.remove(); }); document.body.appendChild(b); }`,
			jsString(origin+"/?name="+name)))
		p.clickAt("#open-poster")
	}
	frame(stranger, "mallory")
	p.waitFor("the stranger's token was ignored", fmt.Sprintf(`window.tokens.includes(%s)`, jsString(stranger+" ignored")))
	frame(app, "carol")
	p.waitFor("the app's token was taken", fmt.Sprintf(`window.tokens.includes(%s)`, jsString(app+" taken")))
	p.waitFor("carol is signed in", `document.body.dataset.view === 'call' && tandem.name === 'carol'`)
	if online(t, srv, e2eToken(t, "dave"), "mallory") {
		t.Error("the token posted by a page of another origin signed mallory in")
	}
}

const (
	e2eJWTAudience = "https://call.example.org"
	e2eJWTIssuer   = "https://app.example.org"
)

var e2eJWTSecret = []byte("the app's secret for the e2e tests, 32+")

// e2eToken is a token of the app for name, valid for an hour.
func e2eToken(t *testing.T, name string) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": name, "aud": e2eJWTAudience, "iss": e2eJWTIssuer, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(e2eJWTSecret)
	if err != nil {
		t.Error(err)
	}
	return s
}

// startEmbeddable starts tandem in the jwt mode, with the app's origin allowed to frame it.
func startEmbeddable(t *testing.T, app string) *tandem {
	t.Helper()
	embedders, err := web.ParseEmbedOrigins(app)
	if err != nil {
		t.Fatal(err)
	}
	return startTandem(t, withAuth(t, auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{Secret: e2eJWTSecret, Audience: e2eJWTAudience, Issuer: e2eJWTIssuer}}),
		func(c *server.Config) { c.EmbedOrigins = embedders })
}
