package e2e

import (
	"fmt"
	"testing"
)

// fillNotices shows as many notices as the page keeps at once, each long enough to wrap on a phone.
func fillNotices(p *page) {
	p.t.Helper()
	for i := 1; i <= 4; i++ {
		p.notify(fmt.Sprintf("Notice %d: long enough to take two lines on a phone, as a server's explanation of an error can be.", i))
	}
}

// TestNoticesNeverCoverControls (issue 14, item 2): notices never land on a control or swallow its click: on a
// desktop and a phone, idle, ringing, in a call, with the devices panel or the chat open.
func TestNoticesNeverCoverControls(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "", withViewport(390, 844))
	connect(t, alice, bob)

	// Mute, then Stop video at once, with the mouse: the notice that Mute raised must not take the second click.
	alice.clickAt("#mic-button")
	alice.waitNotice("Microphone muted")
	alice.clickAt("#cam-button")
	alice.waitFor("the camera turned off by the click", `document.querySelector('#cam-button').getAttribute('aria-pressed') === 'true'`)
	alice.clickAt("#cam-button")
	fillNotices(alice)
	alice.assertNoticesClear("call-desktop")
	alice.click("#devices-button")
	alice.assertNoticesClear("call-desktop-devices")
	alice.click("#devices-button")

	// A narrower window, where the chat opens over the stage.
	alice.resize(1000, 800)
	alice.must(`document.querySelector('#chat').hidden && document.querySelector('#chat-button').click()`)
	alice.waitFor("the chat open", `!document.querySelector('#chat').hidden`)
	alice.assertNoticesClear("call-narrow-chat")
	alice.click("#chat-close")
	alice.resize(1280, 800)

	// A phone in a call: a chat message raises a notice, and Hang up stays within reach of a finger.
	fillNotices(bob)
	bob.assertNoticesClear("call-phone")
	bob.click("#devices-button")
	bob.assertNoticesClear("call-phone-devices")
	bob.click("#devices-button")
	alice.waitFor("chat ready", `tandem.chatReady`)
	alice.must(`(() => {
		document.querySelector('#chat-input').value = 'Can you hear me? I am going to hang up and call you back in a minute.';
		document.querySelector('#chat-form').requestSubmit();
	})()`)
	bob.waitNotice("alice: Can you hear me?")
	bob.assertNoticesClear("call-phone-chat-notice")
	bob.clickAt("#hangup-button")
	bob.waitPhase("idle")
	alice.waitPhase("idle")
	fillNotices(bob)
	bob.assertNoticesClear("idle-phone")

	// Ringing, on the desktop and on the phone, with notices on screen.
	fillNotices(alice)
	alice.assertNoticesClear("idle-desktop")
	bob.callFromList("alice")
	alice.waitIncoming("bob")
	alice.assertNoticesClear("ringing-desktop")
	alice.clickAt("#decline-button")
	bob.waitPhase("idle")
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	fillNotices(bob)
	bob.assertNoticesClear("ringing-phone")
	bob.clickAt("#accept-button")
	bob.waitPhase("active")
	bob.assertMedia(tandemMedia)
}
