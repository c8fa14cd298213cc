package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"tandem/internal/server"
)

// TestCall is the whole story: two people sign in, one calls from the online list, the other accepts, media flows
// both ways, the page shows the call's duration, state and quality, and hanging up brings both back to idle.
func TestCall(t *testing.T) {
	srv := startTandem(t)
	alice := openPage(t, "alice", srv.url+"/")
	alice.waitFor("the login page", `document.body.dataset.view === 'login'`)
	alice.screenshot("login")
	alice.signIn("alice")
	bob := openTandem(t, srv, "bob", "")

	alice.callFromList("bob")
	alice.waitFor("ringing", `document.querySelector('#stage-title').textContent === 'Ringing bob…'`)
	bob.waitIncoming("alice")
	bob.click("#accept-button")
	alice.assertMedia(tandemMedia)
	bob.assertMedia(tandemMedia)

	for _, p := range []*page{alice, bob} {
		p.waitFor("the call state shown as connected", `document.querySelector('#call-state').textContent === 'Connected'`)
		p.waitFor("the duration ticking", `/^0:0[1-9]$/.test(document.querySelector('#call-duration').textContent)`)
		p.waitFor("a round-trip time and bitrates in the quality readout",
			`/ms$/.test(document.querySelector('#stat-rtt').textContent) && /b\/s$/.test(document.querySelector('#stat-in').textContent)`)
		p.waitFor("the remote video in view", `document.querySelector('#remote-overlay').hidden`)
	}
	if got := value[string](bob, `document.querySelector('#call-peer').textContent`); got != "alice" {
		t.Errorf("bob's page names the other party %q, want alice", got)
	}
	alice.screenshot("call")

	alice.click("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")
	bob.waitNotice("alice hung up")
	for _, p := range []*page{alice, bob} {
		p.waitFor("the peer connection gone", `tandem.pc === null && document.querySelector('#remote-video').srcObject === null`)
		p.waitFor("the call controls reset", `document.querySelector('#hangup-button').disabled && document.querySelector('#call-duration').hidden`)
	}
}

// TestPhoneLayout checks the page fits a phone: nothing wider than the screen, and the call controls reachable.
func TestPhoneLayout(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "", withViewport(390, 844))
	bob := openTandem(t, srv, "bob", "")
	alice.waitFor("no horizontal scrolling", `document.documentElement.scrollWidth <= window.innerWidth`)
	alice.search("")
	alice.waitFor("bob in the list", `document.querySelector('.person[data-name="bob"]')`)
	alice.screenshot("idle-phone")
	connect(t, bob, alice)
	alice.waitFor("no horizontal scrolling in a call", `document.documentElement.scrollWidth <= window.innerWidth`)
	alice.waitFor("the hang-up button on screen", `(() => {
		const r = document.querySelector('#hangup-button').getBoundingClientRect();
		return r.width > 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;
	})()`)
	alice.screenshot("call-phone")
}

func TestDecline(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	bob.waitFor("the focus on Accept, for keyboard users", `document.activeElement === document.querySelector('#accept-button')`)
	bob.press("#decline-button", "\r")
	alice.waitNotice("bob declined the call")
	alice.waitPhase("idle")
	bob.waitPhase("idle")
}

func TestBusy(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	carol := openTandem(t, srv, "carol", "")
	connect(t, alice, bob)

	carol.search("bob")
	carol.waitFor("bob marked busy in the list", `document.querySelector('.person[data-name="bob"] .tag-busy')`)
	carol.callFromList("bob")
	carol.waitNotice("bob is in another call")
	carol.waitPhase("idle")
	// The call carol tried to break into carries on.
	alice.waitFor("the call still up", `tandem.phase === 'active' && tandem.pc.connectionState === 'connected'`)
	bob.waitFor("the call still up, no ringing", `tandem.phase === 'active' && document.querySelector('#incoming').hidden`)
}

func TestNotOnline(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	alice.dial("nobody")
	alice.waitNotice("nobody is not online")
	alice.waitPhase("idle")
	alice.dial("alice")
	alice.waitNotice("That’s you")
}

// TestNoAnswer shortens the ring timeout through the page's query string, so the test takes seconds, not 30.
func TestNoAnswer(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "ringTimeout=2")
	start := time.Now()
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	alice.waitNotice("bob didn’t answer")
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("gave up after %s, before the 2 s ring timeout", d)
	}
	alice.waitPhase("idle")
	bob.waitNotice("Missed call from alice")
	bob.waitPhase("idle")
}

// TestGlare has both people call each other at the same moment. Each page's incoming offers are held back half a
// second, as a slow network would, so that both offers are surely on their way before either arrives. The name
// that sorts first (alice) keeps her offer; bob's page answers it: one call, not two broken ones.
func TestGlare(t *testing.T) {
	srv := startTandem(t)
	hold := withScript(holdJS(500, "offer"))
	alice := openTandem(t, srv, "alice", "", hold)
	bob := openTandem(t, srv, "bob", "", hold)
	alice.search("bob")
	bob.search("alice")
	alice.waitFor("bob in the list", `document.querySelector('.person[data-name="bob"]')`)
	bob.waitFor("alice in the list", `document.querySelector('.person[data-name="alice"]')`)
	// Both click within a few milliseconds: the two clicks are scheduled for the same instant of the machine's clock.
	at := time.Now().Add(300 * time.Millisecond).UnixMilli()
	for _, c := range []struct {
		p    *page
		peer string
	}{{alice, "bob"}, {bob, "alice"}} {
		c.p.must(fmt.Sprintf(`setTimeout(() => document.querySelector('.person[data-name=%s]').click(), %d - Date.now())`,
			jsString(c.peer), at))
	}
	alice.waitFor("alice calling", `tandem.phase !== 'idle'`)
	bob.waitFor("bob calling", `tandem.phase !== 'idle'`)
	alice.assertMedia(tandemMedia)
	bob.assertMedia(tandemMedia)
	if role := value[string](alice, `tandem.call.role`); role != "caller" {
		t.Log(alice.describe(), bob.describe())
		t.Errorf("alice's role is %q, want caller (her name sorts first)", role)
	}
	if role := value[string](bob, `tandem.call.role`); role != "callee" {
		t.Log(alice.describe(), bob.describe())
		t.Errorf("bob's role is %q, want callee", role)
	}
	for _, p := range []*page{alice, bob} {
		if n := p.notices(); n != "" {
			t.Errorf("%s's page shows notices after glare: %q", p.label, n)
		}
	}
}

func TestChat(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	connect(t, alice, bob)
	send := func(p *page, text string) {
		p.t.Helper()
		p.waitFor("chat ready", `tandem.chatReady && !document.querySelector('#chat-input').disabled`)
		p.must(fmt.Sprintf(`(() => {
			document.querySelector('#chat-input').value = %s;
			document.querySelector('#chat-form').requestSubmit();
		})()`, jsString(text)))
	}
	received := func(p *page, text string) {
		p.t.Helper()
		p.waitFor(fmt.Sprintf("the message %q", text), fmt.Sprintf(
			`[...document.querySelectorAll('#chat-log .msg-them .msg-text')].some((e) => e.textContent === %s)`, jsString(text)))
	}
	send(alice, "Hi Bob! Can you see me?")
	received(bob, "Hi Bob! Can you see me?")
	send(bob, "Loud and clear ✓")
	received(alice, "Loud and clear ✓")
	alice.screenshot("chat")
	if n := value[int](alice, `document.querySelectorAll('#chat-log .msg-me').length`); n != 1 {
		t.Errorf("alice's log shows %d of her own messages, want 1", n)
	}
}

// TestMute checks the other side stops hearing: the audio energy bob receives from alice stops rising while she
// is muted, and rises again when she unmutes.
func TestMute(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	connect(t, alice, bob)
	energy := func() float64 { return value[mediaStats](bob, tandemMedia).AudioEnergy }
	waitRising := func(what string) {
		t.Helper()
		e := energy()
		bob.waitFor(what, fmt.Sprintf(`(async () => (await %s).audioEnergy > %g)()`, tandemMedia, e+1e-6))
	}
	waitRising("alice's audio to be heard")

	alice.click("#mic-button")
	alice.waitFor("the mute button pressed", `document.querySelector('#mic-button').getAttribute('aria-pressed') === 'true'`)
	bob.waitFor("alice shown as muted", `document.querySelector('#remote-flags').textContent.includes('alice is muted')`)
	// What is already on its way drains within a few hundred milliseconds; after that, silence. The fake
	// microphone beeps every second, so a quiet stretch of three seconds means the audio really stopped.
	time.Sleep(700 * time.Millisecond)
	before := energy()
	time.Sleep(3 * time.Second)
	if after := energy(); after-before > 1e-6 {
		t.Errorf("bob still hears alice while she is muted: audio energy rose from %g to %g", before, after)
	}

	alice.press("", "m") // the keyboard shortcut
	alice.waitFor("the mute button released", `document.querySelector('#mic-button').getAttribute('aria-pressed') === 'false'`)
	bob.waitFor("the muted flag gone", `!document.querySelector('#remote-flags').textContent.includes('muted')`)
	waitRising("alice's audio back after unmuting")
}

// TestReload reloads one page in the middle of a call: the other side is told the call ended, and the reloaded
// page signs itself back in under the same name (resume token in sessionStorage) and is ready for another call.
func TestReload(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	connect(t, alice, bob)
	bob.reload()
	alice.waitPhase("idle")
	alice.waitFor("a notice that the call with bob ended", `[...document.querySelectorAll('.toast-text')].some((e) => e.textContent.includes('bob'))`)
	bob.waitFor("bob signed back in", `document.body.dataset.view === 'call' && tandem.name === 'bob' && tandem.signaling === 'online'`)
	bob.waitPhase("idle")
	// And they can call again.
	connect(t, alice, bob)
}

// TestTutorialClient calls between a tandem page and a page that speaks only the tutorial's messages, both ways.
func TestTutorialClient(t *testing.T) {
	srv := startTandem(t)
	pages := serveTestdata(t)
	alice := openTandem(t, srv, "alice", "")
	tina := openPage(t, "tina", pages+"/tutorial.html?ws="+srv.wsURL)
	tina.waitFor("the tutorial page's socket", `conn.readyState === WebSocket.OPEN`)
	tina.must(`document.querySelector('#usernameInput').value = 'tina'; document.querySelector('#loginBtn').click()`)
	tina.waitFor("tina logged in with her camera", `loggedIn && yourConn`)

	// tandem calls the tutorial client, which answers at once.
	alice.callFromList("tina")
	alice.assertMedia(tandemMedia)
	tina.assertMedia(tutorialMedia)
	alice.waitFor("chat marked unavailable", `document.querySelector('#chat-input').placeholder === 'Chat is not available'`)
	alice.click("#hangup-button")
	alice.waitPhase("idle")
	tina.waitFor("the tutorial client back to idle", `connectedUser === null && yourConn.connectionState === 'new'`)

	// The tutorial client calls tandem, which rings; alice accepts.
	tina.must(`document.querySelector('#callToUsernameInput').value = 'alice'; document.querySelector('#callBtn').click()`)
	alice.waitIncoming("tina")
	alice.click("#accept-button")
	alice.assertMedia(tandemMedia)
	tina.assertMedia(tutorialMedia)
	tina.must(`document.querySelector('#hangUpBtn').click()`)
	alice.waitNotice("tina hung up")
	alice.waitPhase("idle")
}

// TestServerRestart restarts tandem under two signed-in pages, one call in progress. The call ends (the server
// says so on its way down), both pages reconnect by themselves under the same names, and can call again.
func TestServerRestart(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	carol := openTandem(t, srv, "carol", "")
	connect(t, alice, bob)

	srv.restart()
	for _, p := range []*page{alice, bob} {
		p.waitNotice("The server is restarting")
		p.waitPhase("idle")
	}
	for _, p := range []*page{alice, bob, carol} {
		p.waitFor("the page back online under its name", fmt.Sprintf(
			`tandem.signaling === 'online' && tandem.name === %s && document.querySelector('#conn-text').textContent === 'Online'`,
			jsString(p.label)))
	}
	connect(t, carol, alice)
}

// TestTestCallButton checks the place kept for the echo test call (issue 5): the button shows only when the
// online list has the echo user, who is marked as such, and it calls that user. A tandem page stands in for the
// echo peer here.
func TestTestCallButton(t *testing.T) {
	srv := startTandem(t, func(c *server.Config) { c.EchoName = "echo" })
	alice := openTandem(t, srv, "alice", "")
	if !value[bool](alice, `document.querySelector('#test-call').hidden`) {
		t.Error("the Test call button shows with no echo user online")
	}
	echo := openTandem(t, srv, "echo", "")
	openTandem(t, srv, "Marta Lindqvist", "")
	openTandem(t, srv, "carol", "")
	dave := openTandem(t, srv, "dave", "")
	openTandem(t, srv, "zoë", "")
	connect(t, dave, echo)
	alice.search("")
	alice.waitFor("the echo user marked in the list", `document.querySelector('.person[data-name="echo"] .tag-echo')`)
	alice.waitFor("dave marked busy", `document.querySelector('.person[data-name="dave"] .tag-busy')`)
	alice.waitFor("the Test call button", `!document.querySelector('#test-call').hidden`)
	alice.screenshot("idle")
	dave.click("#hangup-button")
	echo.waitPhase("idle")
	alice.click("#test-call-button")
	echo.waitIncoming("alice")
}

// TestCameraDevicesAndScreen turns the camera off and on, switches to another microphone and shares the screen in
// the middle of a call: the other side is told, and media keeps flowing with no renegotiation.
func TestCameraDevicesAndScreen(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	connect(t, alice, bob)
	senderLabel := func(kind string) string {
		return value[string](alice, fmt.Sprintf(
			`tandem.pc.getSenders().find((s) => s.track && s.track.kind === %s).track.label`, jsString(kind)))
	}
	stillFlowing := func(what string) {
		t.Helper()
		m := value[mediaStats](bob, tandemMedia)
		bob.waitFor(what, fmt.Sprintf(`(async () => { const m = await %s; return m.frames > %d && m.audioPackets > %d; })()`,
			tandemMedia, m.Frames, m.AudioPkts))
	}

	alice.click("#cam-button")
	bob.waitFor("alice's camera shown as off", `!document.querySelector('#remote-overlay').hidden && document.querySelector('#stage-detail').textContent === 'Camera off'`)
	alice.waitFor("her own preview marked off", `!document.querySelector('#local-off').hidden`)
	alice.click("#cam-button")
	bob.waitFor("alice's video back", `document.querySelector('#remote-overlay').hidden`)

	alice.click("#devices-button")
	alice.waitFor("the microphones listed", `document.querySelectorAll('#mic-select option').length >= 2`)
	before := senderLabel("audio")
	alice.must(`(() => {
		const s = document.querySelector('#mic-select');
		s.value = [...s.options].find((o) => !o.selected).value;
		s.dispatchEvent(new Event('change'));
	})()`)
	alice.waitFor("another microphone sent", fmt.Sprintf(
		`tandem.pc.getSenders().some((s) => s.track && s.track.kind === 'audio' && s.track.label !== %s)`, jsString(before)))
	stillFlowing("media after switching microphones")
	alice.click("#devices-button")

	camera := senderLabel("video")
	renegotiations := value[int](alice, `tandem.history.filter((l) => l.includes('got offer') || l.includes('got answer')).length`)
	alice.click("#screen-button")
	alice.waitFor("the screen sent instead of the camera", `tandem.pc.getSenders().some((s) => s.track && s.track.kind === 'video' && s.track.label.startsWith('screen'))`)
	bob.waitFor("alice shown sharing her screen", `document.querySelector('#remote-flags').textContent.includes('alice is sharing their screen')`)
	stillFlowing("media while sharing the screen")
	alice.click("#screen-button")
	alice.waitFor("the camera sent again", fmt.Sprintf(
		`tandem.pc.getSenders().some((s) => s.track && s.track.kind === 'video' && s.track.label === %s)`, jsString(camera)))
	bob.waitFor("the sharing flag gone", `!document.querySelector('#remote-flags').textContent.includes('sharing')`)
	if n := value[int](alice, `tandem.history.filter((l) => l.includes('got offer') || l.includes('got answer')).length`); n != renegotiations {
		t.Errorf("switching devices and sharing the screen renegotiated (%d offers/answers, want %d)", n, renegotiations)
	}
}

// TestICERestart restarts ICE in the middle of a call, as the page does by itself when the network path fails:
// from the caller, from the callee, and from both at the same moment (a renegotiation collision, settled as glare
// is). Each time, new ICE credentials are in use and media keeps flowing.
func TestICERestart(t *testing.T) {
	srv := startTandem(t)
	hold := withScript(holdJS(300, "offer")) // so that the two restarts of the last round surely cross
	alice := openTandem(t, srv, "alice", "", hold)
	bob := openTandem(t, srv, "bob", "", hold)
	connect(t, alice, bob)
	ufrag := func(p *page) string {
		return value[string](p, `tandem.pc.remoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]`)
	}
	restarted := func(p *page, old string) {
		t.Helper()
		p.waitFor("new ICE credentials in use, connected", fmt.Sprintf(
			`tandem.pc.signalingState === 'stable' && tandem.pc.connectionState === 'connected' && !tandem.pc.remoteDescription.sdp.includes('a=ice-ufrag:' + %s)`,
			jsString(old)))
		p.assertMedia(tandemMedia)
	}
	for _, who := range [][]*page{{alice}, {bob}, {alice, bob}} {
		oldA, oldB := ufrag(alice), ufrag(bob)
		at := time.Now().Add(200 * time.Millisecond).UnixMilli()
		for _, p := range who {
			p.must(fmt.Sprintf(`setTimeout(() => tandem.call.renegotiate({ iceRestart: true }), %d - Date.now())`, at))
		}
		restarted(alice, oldA)
		restarted(bob, oldB)
	}
	if value[string](alice, `tandem.phase`) != "active" || value[string](bob, `tandem.phase`) != "active" {
		t.Error("the call did not survive the restarts")
	}
}

// TestLoginErrors: a name somebody has, a name that is too long, and a server that is gone are each explained on
// the login page.
func TestLoginErrors(t *testing.T) {
	srv := startTandem(t)
	openTandem(t, srv, "alice", "")
	p := openPage(t, "second alice", srv.url+"/")
	loginError := func(want string) {
		t.Helper()
		p.waitFor(fmt.Sprintf("the login error %q", want), fmt.Sprintf(
			`document.body.dataset.view === 'login' && document.querySelector('#login-error').textContent.includes(%s) && document.querySelector('#login-name').getAttribute('aria-invalid') === 'true'`,
			jsString(want)))
	}
	submit := func(name string) {
		p.must(fmt.Sprintf(`(() => {
			document.querySelector('#login-name').value = %s;
			document.querySelector('#login-form').requestSubmit();
		})()`, jsString(name)))
	}
	submit("alice")
	loginError("already called “alice”")
	submit(strings.Repeat("x", 65))
	loginError("too long")
	submit("   ")
	loginError("Type a name first")
	srv.stop()
	submit("bob")
	loginError("Can't reach the tandem server")
}

// TestCameraRefused: a person who refuses the camera and microphone is told so in words, and can still take a call
// and see and hear the other side.
func TestCameraRefused(t *testing.T) {
	srv := startTandem(t)
	refuse := withScript(`navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));`)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "", refuse)
	bob.waitNotice("Access to the camera and microphone was refused")
	bob.waitFor("the mute and camera buttons showing off", `document.querySelector('#mic-button').getAttribute('aria-pressed') === 'true' && document.querySelector('#cam-button').getAttribute('aria-pressed') === 'true'`)
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	bob.click("#accept-button")
	bob.assertMedia(tandemMedia)
	alice.waitFor("connected", `tandem.pc && tandem.pc.connectionState === 'connected'`)
	bob.click("#mic-button")
	bob.waitNotice("No microphone is available")
}

// TestTakeOver opens bob's session, in the middle of a call, in a second tab (the resume token copied over, as
// a duplicated tab does): the login reply names the peer, and the new page, which has no call to carry on, ends
// the call; the old tab is told it was signed out.
func TestTakeOver(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	connect(t, alice, bob)
	session := value[string](bob, `sessionStorage.getItem('tandem.session')`)
	if session == "" {
		t.Fatal("no session in bob's sessionStorage")
	}
	bob2 := openPage(t, "bob (second tab)", srv.url+"/",
		withScript(fmt.Sprintf(`sessionStorage.setItem('tandem.session', %s)`, jsString(session))))
	bob2.waitFor("bob signed in without typing", `document.body.dataset.view === 'call' && tandem.name === 'bob' && tandem.signaling === 'online'`)
	bob2.waitNotice("Your call with alice ended when the page reloaded")
	bob2.waitPhase("idle")
	alice.waitPhase("idle")
	alice.waitNotice("bob")
	bob.waitFor("the old tab signed out, saying why", `document.body.dataset.view === 'login' && document.querySelector('#login-error').textContent.includes('another tab')`)
	if got := value[string](bob, `tandem.pc === null ? 'closed' : tandem.pc.connectionState`); got != "closed" {
		t.Errorf("the old tab's call is %s, want it closed", got)
	}
}
