package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"tandem/internal/server"
)

const (
	// axeEnv may name axe-core's axe.min.js; otherwise it is looked for where the install command below puts it.
	axeEnv = "TANDEM_AXE"
	// axeDefault is where `npm install --prefix e2e/.cache axe-core` puts it, relative to this package (the
	// folder is not part of the repository: e2e/.gitignore).
	axeDefault = ".cache/node_modules/axe-core/axe.min.js"
	axeHint    = "install it with: npm install --no-save --no-package-lock --prefix e2e/.cache axe-core@4.14.1"
)

var (
	axeOnce   sync.Once
	axeSource string
	axeErr    error
)

// axeScript returns the source of axe-core, to run in a page. Without it the test skips and says how to install
// it, or fails when TANDEM_REQUIRE_BROWSER=1.
func axeScript(t *testing.T) string {
	t.Helper()
	axeOnce.Do(func() {
		path := os.Getenv(axeEnv)
		if path == "" {
			path = axeDefault
		}
		b, err := os.ReadFile(path)
		if err != nil {
			axeErr = fmt.Errorf("axe-core is not installed (%w); %s, or set %s to its axe.min.js", err, axeHint, axeEnv)
			return
		}
		axeSource = string(b)
	})
	if axeErr != nil {
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s=1 but the accessibility tests cannot run: %v", requireEnv, axeErr)
		}
		t.Skip(axeErr.Error())
	}
	return axeSource
}

// withColorScheme opens the page with the system's colour scheme set to "light" or "dark".
func withColorScheme(scheme string) pageOption {
	return func(s *pageSetup) { s.scheme = scheme }
}

// setColorScheme has the page's system colour scheme be "light" or "dark" from now on.
func (p *page) setColorScheme(scheme string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	})
	if err != nil {
		p.fatalf("emulating the %s colour scheme: %v", scheme, err)
	}
	p.waitFor("the "+scheme+" colour scheme", fmt.Sprintf(`matchMedia('(prefers-color-scheme: %s)').matches`, scheme))
}

// axeViolation is one rule axe-core found broken, with the elements that break it.
type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

func (v axeViolation) String() string {
	return fmt.Sprintf("%s (%s): %s: %s", v.ID, v.Impact, v.Help, strings.Join(v.Nodes, "; "))
}

// axeRun runs axe-core on the page (WCAG 2.1 A and AA rules and axe's best practices) and returns its serious and
// critical violations.
func (p *page) axeRun(t *testing.T) []axeViolation {
	t.Helper()
	src := axeScript(t)
	if !value[bool](p, `typeof window.axe === 'object'`) {
		// Evaluated by the browser's debugger, which the page's Content-Security-Policy does not bind.
		if _, err := eval[chromedp.Void](p, src+"\n;undefined"); err != nil {
			p.fatalf("loading axe-core: %v", err)
		}
	}
	return value[[]axeViolation](p, `(async () => {
		`+finishAnimationsJS+`
		const r = await axe.run(document, {
			runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
			resultTypes: ['violations'],
		});
		return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({
			id: v.id, impact: v.impact, help: v.help,
			nodes: v.nodes.slice(0, 8).map((n) => n.target.join(' ') + (n.failureSummary ? ' [' + n.failureSummary.replace(/\s+/g, ' ').slice(0, 200) + ']' : '')),
		}));
	})()`)
}

// assertAccessible runs axe-core on the page in the light and the dark colour scheme, saves a screenshot of each,
// and fails the test for every serious or critical violation.
func (p *page) assertAccessible(t *testing.T, state string) {
	t.Helper()
	for _, scheme := range []string{"light", "dark"} {
		p.setColorScheme(scheme)
		p.must(finishAnimationsJS)
		p.screenshot(fmt.Sprintf("a11y-%s-%s", state, scheme))
		for _, v := range p.axeRun(t) {
			t.Errorf("%s: %s, %s theme: %s", p.label, state, scheme, v)
		}
	}
}

// finishAnimationsJS ends the page's animations and transitions that have an end, so that colours are read as they
// stay, not halfway through a fade (a ring's pulse goes on for ever and is left alone).
const finishAnimationsJS = `for (const a of document.getAnimations()) { try { a.finish(); } catch {} }`

// contrastJS returns, for the element the CSS selector finds, the contrast ratio of its text colour on its
// background colour (both must be opaque), as WCAG 2 defines it.
func contrastJS(sel string) string {
	return fmt.Sprintf(`(() => {
		`+finishAnimationsJS+`
		const e = document.querySelector(%s);
		const s = getComputedStyle(e);
		const rgb = (c) => c.match(/[\d.]+/g).map(Number);
		const lum = ([r, g, b]) => {
			const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
			return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
		};
		const a = lum(rgb(s.color)), b = lum(rgb(s.backgroundColor));
		return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
	})()`, jsString(sel))
}

// TestAccessibility (issue 14, item 10): axe-core finds no serious or critical violation on the login page, the
// idle call page, a ringing page and a call (with its chat open), in the light and the dark theme, on a desktop and
// a phone; and the main buttons' text has at least WCAG AA's 4.5:1 contrast in both themes.
func TestAccessibility(t *testing.T) {
	axeScript(t) // skip before starting anything when axe-core is absent
	srv := startTandem(t, func(c *server.Config) { c.EchoName = "echo" })
	startEcho(t, srv, 0)

	alice := openPage(t, "alice", srv.url+"/")
	alice.waitFor("the login page", `document.body.dataset.view === 'login'`)
	alice.assertAccessible(t, "login")
	for _, scheme := range []string{"light", "dark"} {
		alice.setColorScheme(scheme)
		if c := value[float64](alice, contrastJS("#login-button")); c < 4.5 {
			t.Errorf("%s theme: the Sign in button's contrast is %.2f:1, want at least 4.5:1", scheme, c)
		}
	}
	alice.signIn("alice")
	bob := openTandem(t, srv, "bob", "", withViewport(390, 844))
	alice.search("")
	alice.waitFor("bob and the echo line in the list", `document.querySelector('.person[data-name="bob"]') && !document.querySelector('#test-call').hidden`)
	alice.assertAccessible(t, "idle")
	for _, scheme := range []string{"light", "dark"} {
		alice.setColorScheme(scheme)
		for _, sel := range []string{"#dial-button", "#test-call-button"} {
			if c := value[float64](alice, contrastJS(sel)); c < 4.5 {
				t.Errorf("%s theme: %s's contrast is %.2f:1, want at least 4.5:1", scheme, sel, c)
			}
		}
	}
	bob.search("")
	bob.waitFor("alice in the list", `document.querySelector('.person[data-name="alice"]')`)
	bob.assertAccessible(t, "idle-phone")

	bob.callFromList("alice")
	alice.waitIncoming("bob")
	alice.assertAccessible(t, "ringing")
	for _, scheme := range []string{"light", "dark"} {
		alice.setColorScheme(scheme)
		for _, sel := range []string{"#accept-button", "#decline-button"} {
			if c := value[float64](alice, contrastJS(sel)); c < 4.5 {
				t.Errorf("%s theme: %s's contrast is %.2f:1, want at least 4.5:1", scheme, sel, c)
			}
		}
	}
	alice.click("#accept-button")
	alice.assertMedia(tandemMedia)
	bob.assertMedia(tandemMedia)
	alice.waitFor("chat ready", `tandem.chatReady`)
	bob.waitFor("chat ready", `tandem.chatReady`)
	alice.must(`document.querySelector('#chat-input').value = 'Hello'; document.querySelector('#chat-form').requestSubmit()`)
	bob.waitFor("the message", `[...document.querySelectorAll('#chat-log .msg-text')].some((e) => e.textContent === 'Hello')`)
	if value[bool](alice, `document.querySelector('#chat').hidden`) {
		alice.click("#chat-button")
	}
	alice.must(`document.querySelector('#chat-input').value = 'Hi'; document.querySelector('#chat-form').requestSubmit()`)
	alice.click("#stats-button")
	alice.waitFor("the quality readout", `!document.querySelector('#call-stats').hidden`)
	alice.assertAccessible(t, "call")
	for _, scheme := range []string{"light", "dark"} {
		alice.setColorScheme(scheme)
		if c := value[float64](alice, contrastJS("#hangup-button")); c < 4.5 {
			t.Errorf("%s theme: the Hang up button's contrast is %.2f:1, want at least 4.5:1", scheme, c)
		}
	}
	bob.waitFor("the unread badge on the chat button", `!document.querySelector('#chat-unread').hidden`)
	bob.assertAccessible(t, "call-phone")

	// Someone who signs in now sees the two of them in a call.
	carol := openTandem(t, srv, "carol", "")
	carol.waitFor("alice and bob marked in a call", `document.querySelectorAll('.person .tag-busy').length === 2`)
	carol.assertAccessible(t, "idle-busy")

	// The recent calls, with a missed one.
	alice.click("#hangup-button")
	alice.waitPhase("idle")
	carol.callFromList("alice")
	alice.waitIncoming("carol")
	carol.click("#hangup-button")
	alice.waitPhase("idle")
	alice.waitFor("a missed call counted", `!document.querySelector('#missed-count').hidden`)
	alice.assertAccessible(t, "missed")
	alice.showRecent()
	alice.assertAccessible(t, "recent")
}
