package e2e

import (
	"fmt"
	"strings"
	"testing"

	"tandem/internal/server"
)

// fieldsEmptyJS is true when nothing was typed into the search and dial boxes.
const fieldsEmptyJS = `document.querySelector('#people-search').value === '' && document.querySelector('#dial-name').value === ''`

// pressedJS is whether a toggle button of the call controls is pressed (muted, camera off).
func pressedJS(sel string) string {
	return fmt.Sprintf(`document.querySelector(%s).getAttribute('aria-pressed') === 'true'`, jsString(sel))
}

// TestWordsThatMislead (issue 14, item 6): what the page says is true. Alone with the echo line, the page counts
// nobody to call and says to share its address; M and V do what the buttons say, right after signing in, after a
// call and in a call dialled from the keyboard, and type nothing into a field; in a test call a muted microphone
// and a camera turned off are said to be yours, not the echo line's; dialling "grandma" calls Grandma (the
// server's case rules), and asks which one when two names differ only in case; the ringing page does not send the
// person looking for its buttons the wrong way.
func TestWordsThatMislead(t *testing.T) {
	srv := startTandem(t, func(c *server.Config) { c.EchoName = "echo" })
	startEcho(t, srv, 0)
	alice := openTandem(t, srv, "alice", "")

	alice.waitFor("the echo line in the list", `document.querySelector('.person[data-name="echo"]')`)
	if got := value[string](alice, `document.querySelector('#people-count').textContent`); got != "0" {
		t.Errorf("alone with the echo line, alice's page counts %q people online, want 0", got)
	}
	alice.waitFor("the hint to share the page's address", `[...document.querySelectorAll('.people-empty')].some((e) => e.textContent.includes('Share this page'))`)
	alice.screenshot("words-alone")

	// The shortcuts, right after signing in: nothing was clicked, the focus is where the page put it.
	alice.keys("m")
	alice.waitFor("M to mute", pressedJS("#mic-button"))
	alice.keys("v")
	alice.waitFor("V to stop video", pressedJS("#cam-button"))
	if !value[bool](alice, fieldsEmptyJS) {
		t.Errorf("M and V typed into a field: search %q, dial %q", value[string](alice, `document.querySelector('#people-search').value`),
			value[string](alice, `document.querySelector('#dial-name').value`))
	}

	// A test call, muted and with the camera off: the words are about alice, the echo line only mirrors her.
	alice.click("#test-call-button")
	alice.waitFor("the test call connected", `tandem.phase === 'active' && tandem.pc && tandem.pc.connectionState === 'connected'`)
	alice.waitFor("the words say alice is muted", `document.querySelector('#remote-flags').textContent.includes('You are muted')`)
	alice.waitFor("the words say alice's camera is off", `document.querySelector('#stage-detail').textContent.includes('Your camera is off')`)
	alice.screenshot("words-test-call-muted")
	if flags := value[string](alice, `document.querySelector('#remote-flags').textContent + ' ' + document.querySelector('#stage-detail').textContent`); containsAny(flags, "echo is muted", "Camera off") {
		t.Errorf("the test call blames the echo line for alice's own microphone or camera: %q", flags)
	}
	alice.keys("m")
	alice.keys("v")
	alice.waitFor("unmuted, camera on, in the call", `!(`+pressedJS("#mic-button")+`) && !(`+pressedJS("#cam-button")+`)`)
	alice.waitFor("the flag gone", `document.querySelector('#remote-flags').textContent === ''`)
	alice.click("#hangup-button")
	alice.waitPhase("idle")
	alice.keys("m")
	alice.waitFor("M to mute after a call", pressedJS("#mic-button"))
	alice.keys("m")
	alice.waitFor("M to unmute", `!(`+pressedJS("#mic-button")+`)`)
	if !value[bool](alice, fieldsEmptyJS) {
		t.Error("M typed into a field after the call")
	}

	// Grandma signs in; alice types "grandma" (in lower case) under "Call someone by name" and presses Enter.
	grandma := openTandem(t, srv, "Grandma", "", withViewport(390, 844))
	alice.search("")
	alice.waitFor("Grandma counted", `document.querySelector('#people-count').textContent === '1'`)
	alice.must(`document.querySelector('#dial-name').focus(); document.querySelector('#dial-name').value = 'grandma'`)
	alice.keys("\r")
	grandma.waitIncoming("alice")
	alice.waitFor("alice calling Grandma", `tandem.phase === 'outgoing' && tandem.peer === 'Grandma'`)
	alice.keys("v") // in the call she dialled from the keyboard
	alice.waitFor("V to stop video while calling", pressedJS("#cam-button"))
	if got := value[string](alice, `document.querySelector('#dial-name').value`); got != "grandma" {
		t.Errorf("the dial box holds %q after V, want grandma", got)
	}
	alice.keys("v")

	// The ringing page's words point the right way (if they point at all).
	for _, p := range []*page{grandma} {
		words := value[string](p, `document.querySelector('#stage-detail').textContent`)
		p.screenshot("words-ringing-phone")
		type box struct{ Accept, Words float64 }
		at := value[box](p, `(() => ({
			Accept: document.querySelector('#accept-button').getBoundingClientRect().top,
			Words: document.querySelector('#stage-detail').getBoundingClientRect().top,
		}))()`)
		if containsAny(words, "below") && at.Accept < at.Words || containsAny(words, "above") && at.Accept > at.Words {
			t.Errorf("%s: the ringing page says %q, but Accept is at y=%.0f and the words at y=%.0f", p.label, words, at.Accept, at.Words)
		}
	}
	grandma.click("#decline-button")
	alice.waitNotice("Grandma declined the call")
	alice.waitPhase("idle")

	// Two people whose names differ only in case: the page asks which one rather than guess.
	openTandem(t, srv, "GRANDMA", "")
	alice.dial("grandma")
	alice.waitNotice("Did you mean “GRANDMA” or “Grandma”?")
	if phase := value[string](alice, `tandem.phase`); phase != "idle" {
		t.Errorf("alice's page is %s after an ambiguous name, want idle", phase)
	}
	alice.dial("grandpa")
	alice.waitNotice("grandpa is not online")
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
