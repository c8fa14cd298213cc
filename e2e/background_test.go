package e2e

import (
	"context"
	"testing"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// backgroundJS lets a test put the page in the background: headless Chromium keeps every tab visible and focused,
// so window.tandemBackground(true) has the page's document say it is hidden and unfocused (visibilityState,
// hidden, hasFocus) and fires visibilitychange and blur, as a browser does when its person switches tabs or
// windows; tandemBackground(false) brings it back.
const backgroundJS = `(() => {
	let away = false;
	Object.defineProperty(Document.prototype, 'visibilityState', { get() { return away ? 'hidden' : 'visible'; }, configurable: true });
	Object.defineProperty(Document.prototype, 'hidden', { get() { return away; }, configurable: true });
	const hasFocus = Document.prototype.hasFocus;
	Document.prototype.hasFocus = function () { return !away && hasFocus.call(this); };
	window.tandemBackground = (on) => {
		away = on;
		document.dispatchEvent(new Event('visibilitychange'));
		window.dispatchEvent(new Event(on ? 'blur' : 'focus'));
	};
})()`

// notificationsJS records what the page does with the browser's real Notification API: each notification made
// (window.tandemNotes: title, options, and the notification itself, with whether the page closed it) and how often
// the page asked for the permission (window.tandemAsked()).
const notificationsJS = `(() => {
	const Native = window.Notification;
	if (!Native) return;
	window.tandemNotes = [];
	let asked = 0;
	class Recorded extends Native {
		constructor(title, options) {
			super(title, options);
			this.closedByPage = false;
			window.tandemNotes.push({ title, options, note: this });
		}
		close() { this.closedByPage = true; super.close(); }
	}
	Object.defineProperty(Recorded, 'permission', { get: () => Native.permission });
	Recorded.requestPermission = (...args) => { asked++; return Native.requestPermission(...args); };
	window.Notification = Recorded;
	window.tandemAsked = () => asked;
})()`

// grantNotifications has the browser allow the page's origin to show notifications, as a person who answers the
// browser's question with Allow.
func (p *page) grantNotifications(origin string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if _, err := chromedp.Call(ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
		Permission: &cdpbrowser.PermissionDescriptor{Name: "notifications"},
		Setting:    cdpbrowser.PermissionSettingGranted,
		Origin:     origin,
	}); err != nil {
		p.fatalf("granting notifications: %v", err)
	}
}

// TestRingingInTheBackground (issue 14, item 4): a call that rings while the page is in the background is hard to
// miss: the page asks for notifications only when the person chooses to (not on load), then shows one for the call
// (and accepting from it answers the call), the tab's title says who calls and blinks, and the ring tone sounds. A
// call given up by its caller leaves a notification of the missed call; one that starts ringing in front and is
// left in the background gets its notification then.
func TestRingingInTheBackground(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "", withScript(backgroundJS), withScript(notificationsJS))

	// Signed in: nothing asked yet; a card offers it.
	if asked := value[int](bob, `tandemAsked()`); asked != 0 {
		t.Errorf("bob's page asked for notifications %d times on its own", asked)
	}
	bob.waitFor("the card offering notifications", `!document.querySelector('#notify-card').hidden`)
	bob.screenshot("background-notify-card")
	bob.grantNotifications(srv.url) // what bob answers when his browser asks
	bob.clickAt("#notify-button")
	bob.waitFor("the page to have asked once, and the card gone", `tandemAsked() === 1 && document.querySelector('#notify-card').hidden`)

	// bob switches to another tab; alice calls.
	bob.must(`tandemBackground(true)`)
	alice.callFromList("bob")
	bob.waitFor("a notification of alice's call", `tandemNotes.length === 1 && tandemNotes[0].title === 'alice is calling' && tandemNotes[0].options.requireInteraction`)
	bob.waitFor("the tab's title saying who calls", `document.title === '☎ alice is calling…'`)
	bob.waitFor("the tab's title blinking", `document.title === '☎ Incoming call · tandem'`)
	bob.waitFor("the ring tone sounding", `tandem.tone === 'ring' && tandem.toneLevel() > 0.01`)

	// bob clicks the notification: the call is answered.
	bob.must(`tandemNotes[0].note.dispatchEvent(new Event('click'))`)
	bob.waitPhase("active")
	alice.assertMedia(tandemMedia)
	bob.assertMedia(tandemMedia)
	bob.waitFor("the notification closed, the title back, the ring stopped", `tandemNotes[0].note.closedByPage && document.title === 'tandem' && tandem.tone === ''`)
	alice.click("#hangup-button")
	bob.waitPhase("idle")

	// alice calls and gives up while bob is away: the call's notification goes, and one says he missed it.
	alice.callFromList("bob")
	bob.waitFor("a notification of the second call", `tandemNotes.length === 2`)
	alice.click("#hangup-button")
	bob.waitPhase("idle")
	bob.waitFor("a notification of the missed call", `tandemNotes.length === 3 && tandemNotes[2].title === 'Missed call from alice' && tandemNotes[1].note.closedByPage`)
	bob.waitFor("the title back", `document.title === 'tandem'`)

	// In front, a call rings without a notification; turning away brings one.
	bob.must(`tandemBackground(false)`)
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	bob.waitFor("the title saying who calls", `document.title === '☎ alice is calling…'`)
	if n := value[int](bob, `tandemNotes.length`); n != 3 {
		t.Errorf("bob's page showed a notification for a call that rang in front of him")
	}
	bob.must(`tandemBackground(true)`)
	bob.waitFor("a notification once bob turned away", `tandemNotes.length === 4 && tandemNotes[3].title === 'alice is calling'`)
	bob.must(`tandemBackground(false)`)
	bob.click("#decline-button")
	bob.waitFor("the notification closed", `tandemNotes[3].note.closedByPage && document.title === 'tandem'`)
}
