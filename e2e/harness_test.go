package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"tandem/internal/server"
)

// wait is how long any one condition may take to come true: a call takes 7-17 s from start to decoded frames on a
// busy two-core machine.
const wait = 30 * time.Second

// tandem is a real tandem server on 127.0.0.1, for one test.
type tandem struct {
	t      *testing.T
	cfg    server.Config
	addr   string
	url    string // http://127.0.0.1:port
	wsURL  string // ws://127.0.0.1:port/ws
	logs   *syncBuffer
	stop   func() // stops the server gracefully and waits for it
	server *server.Server
}

// startTandem starts a tandem server with its default configuration (changed by the options) on a free loopback
// port. It stops when the test ends, after the test's pages are closed.
func startTandem(t *testing.T, opts ...func(*server.Config)) *tandem {
	t.Helper()
	requireBrowser(t) // every test here needs the browser; skip before starting anything
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	for _, o := range opts {
		o(&cfg)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := &tandem{t: t, cfg: cfg, addr: addr, url: "http://" + addr, wsURL: "ws://" + addr + "/ws", logs: &syncBuffer{}}
	srv.serve(ln)
	t.Cleanup(func() {
		srv.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", srv.logs.String())
		}
	})
	return srv
}

func (srv *tandem) serve(ln net.Listener) {
	t := srv.t
	logger := slog.New(slog.NewTextHandler(srv.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := server.New(srv.cfg, logger)
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	srv.run(s, ln)
}

// run serves s on ln until stop, which waits for the graceful shutdown (at most wait).
func (srv *tandem) run(s *server.Server, ln net.Listener) {
	t := srv.t
	srv.server = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var once sync.Once
	srv.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(wait):
				t.Errorf("the server did not stop within %s", wait)
			}
		})
	}
}

// restart stops the server and starts a new one on the same address, as an operator restarting tandem would.
func (srv *tandem) restart() {
	srv.t.Helper()
	srv.stop()
	ln, err := net.Listen("tcp", srv.addr)
	if err != nil {
		srv.t.Fatalf("listening again on %s: %v", srv.addr, err)
	}
	srv.serve(ln)
}

// serveTestdata serves e2e/testdata on its own loopback port (another origin than tandem's, as a tutorial client
// would be) and returns its URL.
func serveTestdata(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir("testdata")), ReadHeaderTimeout: 10 * time.Second}
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

// page is one browser tab.
type page struct {
	t     *testing.T
	label string
	ctx   context.Context
	logs  *syncBuffer
}

// pageOption changes how a page is opened.
type pageOption func(*pageSetup)

type pageSetup struct {
	scripts []string
	width   int64
	height  int64
	scheme  string          // the system's colour scheme, "light" or "dark"; the browser's own when empty
	langs   string          // the browser's languages, as in Accept-Language ("zh-CN,zh"); the browser's own when empty
	browser context.Context // nil: the shared browser
	device  bool            // a browser context of its own: another device, with storage of its own
}

// asAnotherDevice opens the page in a browser context of its own (as another device would: nothing in its
// localStorage from the other pages).
func asAnotherDevice() pageOption {
	return func(s *pageSetup) { s.device = true }
}

// withLanguages opens the page in a browser whose languages are langs, as an Accept-Language header lists them
// ("zh-CN,zh;q=0.9"): navigator.languages says them, and the requests send them.
func withLanguages(langs string) pageOption {
	return func(s *pageSetup) { s.langs = langs }
}

// inBrowser opens the page in another browser than the shared one (one started with other flags).
func inBrowser(ctx context.Context) pageOption {
	return func(s *pageSetup) { s.browser = ctx }
}

// withScript runs JavaScript in the page before any of the page's own scripts, on every load.
func withScript(js string) pageOption {
	return func(s *pageSetup) { s.scripts = append(s.scripts, js) }
}

// withViewport sets the size of the page's viewport (a phone, say).
func withViewport(width, height int64) pageOption {
	return func(s *pageSetup) { s.width, s.height = width, height }
}

// openPage opens url in a new tab of the shared browser. The tab closes when the test ends; if the test failed,
// the tab's console output is logged.
func openPage(t *testing.T, label, url string, opts ...pageOption) *page {
	t.Helper()
	var setup pageSetup
	for _, o := range opts {
		o(&setup)
	}
	parent := setup.browser
	if parent == nil {
		parent = browser(t)
	}
	var ctxOpts []chromedp.ContextOption
	if setup.device {
		ctxOpts = append(ctxOpts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(parent, ctxOpts...)
	p := &page{t: t, label: label, ctx: ctx, logs: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console of %s:\n%s", label, p.logs.String())
		}
		cancel()
	})
	// The first action on a tab creates it: it must run on the tab's own context, with no deadline.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("%s: opening a tab: %v", label, err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *cdpruntime.EventConsoleAPICalled:
			parts := make([]string, 0, len(ev.Args))
			for _, a := range ev.Args {
				if a.Value != nil {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			fmt.Fprintf(p.logs, "%s console.%s: %s\n", time.Now().Format("15:04:05.000"), ev.Type, strings.Join(parts, " "))
		case *cdpruntime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			fmt.Fprintf(p.logs, "%s exception: %s (%s:%d)\n", time.Now().Format("15:04:05.000"), desc, d.URL, d.LineNumber)
		}
	})
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	for _, js := range setup.scripts {
		if _, err := chromedp.Call(ctx, cdppage.AddScriptToEvaluateOnNewDocument,
			cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: js}); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
	}
	if setup.width > 0 {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(setup.width, setup.height)); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
	}
	if setup.langs != "" {
		ua, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.userAgent`))
		if err == nil {
			_, err = chromedp.Call(ctx, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{
				UserAgent: ua, AcceptLanguage: setup.langs,
			})
		}
		if err != nil {
			t.Fatalf("%s: setting the browser's languages: %v", label, err)
		}
	}
	if setup.scheme != "" {
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: setup.scheme}},
		}); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
	}
	p.navigate(url)
	return p
}

func (p *page) navigate(url string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		p.fatalf("navigating to %s: %v", url, err)
	}
}

func (p *page) reload() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		p.fatalf("reloading: %v", err)
	}
}

// eval runs a JavaScript expression (awaiting it if it is a promise) and decodes its value into T.
func eval[T any](p *page, js string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// must runs a JavaScript expression and fails the test if it throws.
func (p *page) must(js string) {
	p.t.Helper()
	if _, err := eval[chromedp.Void](p, js); err != nil {
		p.fatalf("running %s: %v", js, err)
	}
}

// value runs a JavaScript expression and returns its value as T, failing the test if it throws.
func value[T any](p *page, js string) T {
	p.t.Helper()
	v, err := eval[T](p, js)
	if err != nil {
		p.fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition (which may be async) until it is true, for at most `wait`.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	js := fmt.Sprintf("(async () => !!(await (%s)))()", cond)
	deadline := time.Now().Add(wait)
	var lastErr error
	for {
		ok, err := eval[bool](p, js)
		if err == nil && ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				p.fatalf("timed out after %s waiting for %s (last error: %v)", wait, what, lastErr)
			}
			p.fatalf("timed out after %s waiting for %s", wait, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fatalf fails the test with what the page shows, to tell what went wrong.
func (p *page) fatalf(format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("%s: %s\n%s", p.label, fmt.Sprintf(format, args...), p.describe())
}

// describe summarises the state of a tandem page (or says what it can of another page).
func (p *page) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.href,
		view: document.body && document.body.dataset.view,
		phase: window.tandem && tandem.phase,
		peer: window.tandem && tandem.peer,
		signaling: window.tandem && tandem.signaling,
		pc: window.tandem && tandem.pc ? tandem.pc.connectionState : null,
		history: window.tandem && tandem.history,
		notices: [...document.querySelectorAll('.toast-text, .form-error')].map((e) => e.textContent).filter(Boolean),
	})`))
	if err != nil {
		return fmt.Sprintf("(page state unavailable: %v)", err)
	}
	return "page state: " + s
}

// screenshot saves a PNG of the page's viewport as an artifact and returns its path.
func (p *page) screenshot(name string) string {
	p.t.Helper()
	return p.saveShot(name, chromedp.CaptureScreenshot())
}

// saveShot takes a screenshot with shoot (a viewport's or a whole page's) and saves it as name.png in
// TANDEM_ARTIFACTS, or in the test's temporary folder.
func (p *page) saveShot(name string, shoot chromedp.Action[[]byte]) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	png, err := chromedp.Run(ctx, shoot)
	if err != nil {
		p.fatalf("screenshot: %v", err)
	}
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		dir = p.t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// notices returns the text of the notices the page shows.
func (p *page) notices() string {
	return value[string](p, `[...document.querySelectorAll('.toast-text')].map((e) => e.textContent).join('\n')`)
}

// waitNotice waits for a notice containing text.
func (p *page) waitNotice(text string) {
	p.t.Helper()
	b, _ := json.Marshal(text)
	p.waitFor(fmt.Sprintf("a notice saying %q", text),
		fmt.Sprintf(`[...document.querySelectorAll('.toast-text')].some((e) => e.textContent.includes(%s))`, b))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ---------------------------------------------------------------------------------------------------------------
// The tandem web client

// query is the query string the tandem pages of the tests are opened with.
type query string

// openTandem opens the tandem web client and signs in as name.
func openTandem(t *testing.T, srv *tandem, name string, q query, opts ...pageOption) *page {
	t.Helper()
	url := srv.url + "/"
	if q != "" {
		url += "?" + string(q)
	}
	p := openPage(t, name, url, opts...)
	p.signIn(name)
	return p
}

// signIn types the name into the login form and submits it with the Enter key, as a person would.
func (p *page) signIn(name string) {
	p.t.Helper()
	p.waitFor("the login form", `document.body.dataset.view === 'login' && !document.querySelector('#login-view').hidden`)
	p.typeName(name)
	p.waitFor("the call page", fmt.Sprintf(`document.body.dataset.view === 'call' && tandem.name === %s && tandem.signaling === 'online'`, jsString(name)))
}

// click clicks the element the CSS selector finds, with the page's own handlers.
func (p *page) click(sel string) {
	p.t.Helper()
	p.waitFor("a clickable "+sel, fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e && !e.disabled && e.offsetParent !== null; })()`, jsString(sel)))
	p.must(fmt.Sprintf(`document.querySelector(%s).click()`, jsString(sel)))
}

// search types text into the search box of the online list (showing the list first, if the page shows its recent
// calls).
func (p *page) search(text string) {
	p.t.Helper()
	p.must(fmt.Sprintf(`(() => {
		const tab = document.querySelector('#tab-people');
		if (tab && tab.getAttribute('aria-selected') !== 'true') tab.click();
		const box = document.querySelector('#people-search');
		box.value = %s;
		box.dispatchEvent(new Event('input', { bubbles: true }));
	})()`, jsString(text)))
}

// press focuses the element the CSS selector finds (none: the page itself) and types keys, as a keyboard user would.
func (p *page) press(sel, keys string) {
	p.t.Helper()
	if sel == "" {
		p.must(`document.activeElement && document.activeElement.blur()`)
	} else {
		p.must(fmt.Sprintf(`document.querySelector(%s).focus()`, jsString(sel)))
	}
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.KeyEvent(keys)); err != nil {
		p.fatalf("typing %q: %v", keys, err)
	}
}

// callFromList searches the online list for name, as a person would, and clicks it.
func (p *page) callFromList(name string) {
	p.t.Helper()
	p.search(name)
	p.click(fmt.Sprintf(`.person[data-name=%s]`, jsString(name)))
}

// dial types a name into "Call someone by name" and submits it.
func (p *page) dial(name string) {
	p.t.Helper()
	p.must(fmt.Sprintf(`(() => { document.querySelector('#dial-name').value = %s; document.querySelector('#dial-form').requestSubmit(); })()`, jsString(name)))
}

func (p *page) waitPhase(phase string) {
	p.t.Helper()
	p.waitFor("phase "+phase, fmt.Sprintf(`tandem.phase === %s`, jsString(phase)))
}

// waitIncoming waits until the page rings with a call from name.
func (p *page) waitIncoming(from string) {
	p.t.Helper()
	p.waitFor("an incoming call from "+from, fmt.Sprintf(
		`tandem.phase === 'incoming' && !document.querySelector('#incoming').hidden && document.querySelector('#incoming-title').textContent === %s`,
		jsString(from)))
}

// mediaStats is what getStats and the remote <video> say about a call's incoming media.
type mediaStats struct {
	State       string  `json:"state"`
	VideoWidth  int     `json:"videoWidth"`
	Frames      int     `json:"frames"`
	AudioPkts   int     `json:"audioPackets"`
	AudioEnergy float64 `json:"audioEnergy"`
}

// mediaJS returns a JavaScript expression that reads mediaStats from a peer connection and a <video>.
func mediaJS(pc, video string) string {
	return fmt.Sprintf(`(async () => {
		const pc = %s;
		const video = document.querySelector(%s);
		const out = { state: pc ? pc.connectionState : 'none', videoWidth: video ? video.videoWidth : 0, frames: 0, audioPackets: 0, audioEnergy: 0 };
		if (!pc) return out;
		(await pc.getStats()).forEach((s) => {
			if (s.type !== 'inbound-rtp') return;
			if (s.kind === 'video') out.frames += s.framesDecoded || 0;
			if (s.kind === 'audio') { out.audioPackets += s.packetsReceived || 0; out.audioEnergy += s.totalAudioEnergy || 0; }
		});
		return out;
	})()`, pc, jsString(video))
}

// tandemMedia is mediaJS for the tandem client.
var tandemMedia = mediaJS("tandem.pc", "#remote-video")

// tutorialMedia is mediaJS for the tutorial-style client.
var tutorialMedia = mediaJS("yourConn", "#remoteVideo")

// assertMedia checks that real media arrives: connected, the remote video has a size, video frames are decoded
// and their count rises, and audio packets arrive.
func (p *page) assertMedia(statsJS string) mediaStats {
	p.t.Helper()
	p.waitFor("connected with remote video and audio", fmt.Sprintf(
		`(async () => { const m = await %s; return m.state === 'connected' && m.videoWidth > 0 && m.frames > 0 && m.audioPackets > 0; })()`, statsJS))
	first := value[mediaStats](p, statsJS)
	p.waitFor("video frames decoded to keep rising", fmt.Sprintf(
		`(async () => (await %s).frames > %d)()`, statsJS, first.Frames))
	return value[mediaStats](p, statsJS)
}

// pair opens two tandem pages signed in as a and b.
func pair(t *testing.T, srv *tandem, a, b string, q query) (*page, *page) {
	t.Helper()
	return openTandem(t, srv, a, q), openTandem(t, srv, b, q)
}

// connect has a call b, b accept, and checks media flows both ways.
func connect(t *testing.T, a, b *page) {
	t.Helper()
	a.callFromList(b.label)
	b.waitIncoming(a.label)
	b.click("#accept-button")
	a.waitPhase("active")
	b.waitPhase("active")
	a.assertMedia(tandemMedia)
	b.assertMedia(tandemMedia)
}

// holdJS delays the delivery of the given incoming signaling message types by ms milliseconds, as a slow network
// would. It wraps the page's WebSocket before the page's scripts run.
func holdJS(ms int, types ...string) string {
	list, _ := json.Marshal(types)
	return fmt.Sprintf(`(() => {
		const Native = window.WebSocket;
		const held = new Set(%s);
		window.WebSocket = class extends Native {
			set onmessage(fn) {
				super.onmessage = (ev) => {
					let type = '';
					try { type = JSON.parse(ev.data).type; } catch {}
					if (held.has(type)) setTimeout(() => fn.call(this, ev), %d);
					else fn.call(this, ev);
				};
			}
			get onmessage() { return super.onmessage; }
		};
	})()`, list, ms)
}

// noticesOverControlsJS lists each visible control of the page (button, field, link) that a visible notice covers
// (overlaps, and is on top of it there), as "notice text → control": a notice must never cover or block a control.
const noticesOverControlsJS = `(() => {
	const visible = (e) => {
		const r = e.getBoundingClientRect();
		return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden' && e.closest('[hidden]') === null;
	};
	const name = (e) => e.id ? '#' + e.id : (e.getAttribute('aria-label') || e.textContent.trim().slice(0, 30) || e.tagName);
	const toasts = [...document.querySelectorAll('#toasts .toast')].filter(visible);
	const controls = [...document.querySelectorAll('button, input, select, textarea, a[href]')]
		.filter((e) => !e.closest('#toasts') && visible(e));
	const out = [];
	for (const t of toasts) {
		const a = t.getBoundingClientRect();
		for (const c of controls) {
			const b = c.getBoundingClientRect();
			const left = Math.max(a.left, b.left), right = Math.min(a.right, b.right);
			const top = Math.max(a.top, b.top), bottom = Math.min(a.bottom, b.bottom);
			if (left >= right || top >= bottom) continue;
			// They overlap: the notice covers the control if it is what is on top there.
			const onTop = document.elementFromPoint((left + right) / 2, (top + bottom) / 2);
			if (onTop && onTop.closest('#toasts')) {
				out.push(t.querySelector('.toast-text').textContent.slice(0, 40) + ' → ' + name(c));
			}
		}
	}
	return out;
})()`

// notify shows a notice on a tandem page as the page itself does (its own toast function), for long enough for
// the test to look at it.
func (p *page) notify(text string) {
	p.t.Helper()
	p.must(fmt.Sprintf(`import('/js/ui.js').then((ui) => { ui.toast(%s, { timeout: 120000 }); })`, jsString(text)))
}

// assertNoticesClear fails the test if a notice covers a control of the page, and saves a screenshot of it.
func (p *page) assertNoticesClear(state string) {
	p.t.Helper()
	p.screenshot("notices-" + state)
	if n := value[int](p, `document.querySelectorAll('#toasts .toast').length`); n == 0 {
		p.fatalf("%s: no notice on screen to check", state)
	}
	if over := value[[]string](p, noticesOverControlsJS); len(over) > 0 {
		p.t.Errorf("%s: %s: notices cover controls: %q", p.label, state, over)
	}
}

// clickAt clicks the middle of the element the CSS selector finds with the mouse, as a person would: whatever
// is on top at that point gets the click.
func (p *page) clickAt(sel string) {
	p.t.Helper()
	type point struct{ X, Y float64 }
	at := value[point](p, fmt.Sprintf(`(() => {
		const r = document.querySelector(%s).getBoundingClientRect();
		return { X: r.left + r.width / 2, Y: r.top + r.height / 2 };
	})()`, jsString(sel)))
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.MouseClickXY(at.X, at.Y)); err != nil {
		p.fatalf("clicking %s: %v", sel, err)
	}
}

// resize changes the size of the page's viewport.
func (p *page) resize(width, height int64) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height)); err != nil {
		p.fatalf("resizing to %dx%d: %v", width, height, err)
	}
}

// keys types keys into whatever has the focus, as a person at the keyboard would.
func (p *page) keys(keys string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.KeyEvent(keys)); err != nil {
		p.fatalf("typing %q: %v", keys, err)
	}
}

// doubleClickAt double-clicks the middle of the element the CSS selector finds with the mouse.
func (p *page) doubleClickAt(sel string) {
	p.t.Helper()
	type point struct{ X, Y float64 }
	at := value[point](p, fmt.Sprintf(`(() => {
		const r = document.querySelector(%s).getBoundingClientRect();
		return { X: r.left + r.width / 2, Y: r.top + r.height / 2 };
	})()`, jsString(sel)))
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.MouseClickXY(at.X, at.Y, chromedp.ClickCount(2))); err != nil {
		p.fatalf("double-clicking %s: %v", sel, err)
	}
}

// gateJS holds back the incoming signaling messages of the given types while window.tandemGate.closed is true, and
// delivers them, in order, when window.tandemGate.open() is called. It wraps the page's WebSocket before the
// page's scripts run. The gate starts open.
func gateJS(types ...string) string {
	list, _ := json.Marshal(types)
	return fmt.Sprintf(`(() => {
		const Native = window.WebSocket;
		const held = new Set(%s);
		const queue = [];
		window.tandemGate = {
			closed: false,
			held: () => queue.length,
			open() { this.closed = false; while (queue.length) { const [fn, ws, ev] = queue.shift(); fn.call(ws, ev); } },
		};
		window.WebSocket = class extends Native {
			set onmessage(fn) {
				super.onmessage = (ev) => {
					let type = '';
					try { type = JSON.parse(ev.data).type; } catch {}
					if (window.tandemGate.closed && held.has(type)) queue.push([fn, this, ev]);
					else fn.call(this, ev);
				};
			}
			get onmessage() { return super.onmessage; }
		};
	})()`, list)
}

// typeName types name and Enter into the login form's name field, as a person would: keys sent to the focused
// field. (chromedp's SendKeys reads the field's node while its DOM events update it, a data race inside chromedp
// that -race reports when the page changes the field's attributes, as its translations do.)
func (p *page) typeName(name string) {
	p.t.Helper()
	p.must(`(() => { const e = document.querySelector('#login-name'); e.value = ''; e.focus(); return document.activeElement === e; })()`)
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.KeyEvent(name+"\r")); err != nil {
		p.fatalf("typing the name: %v", err)
	}
}

// signInAs types a name into the login form and submits it, and leaves the page wherever the server's answer
// takes it (the login page with an error, say).
func (p *page) signInAs(name string) {
	p.t.Helper()
	p.waitFor("the login form", `document.body.dataset.view === 'login' && !document.querySelector('#login-view').hidden && !document.querySelector('#login-button').disabled`)
	p.typeName(name)
}
