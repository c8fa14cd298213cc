package e2e

import (
	"testing"
)

// shownVideo is how much of the window the remote video's picture takes: the part of it that is drawn (not the
// letterbox bands of a video that fits, nor what is cut off one that fills), within the stage.
type shownVideo struct {
	W, H     float64 // the picture's width and height in CSS pixels
	VW, VH   float64 // the window's
	Fit      string  // the video's object-fit
	Videos   int     // the remote video's intrinsic width, to know it plays
	StatsOff bool    // the quality readout is hidden
	ChatOff  bool    // the chat is closed
	ListOff  bool    // the list of people is not shown
}

const shownVideoJS = `(() => {
	const v = document.querySelector('#remote-video');
	const r = v.getBoundingClientRect();
	const stage = document.querySelector('#main').getBoundingClientRect();
	const fit = getComputedStyle(v).objectFit;
	let w = r.width, h = r.height;
	if (fit === 'contain' && v.videoWidth && v.videoHeight) {
		const ratio = v.videoWidth / v.videoHeight;
		if (w / h > ratio) w = h * ratio; else h = w / ratio;
	}
	const shown = (e) => e.getBoundingClientRect().width > 0 && e.closest('[hidden]') === null && getComputedStyle(e).display !== 'none';
	return {
		W: Math.min(w, stage.width), H: Math.min(h, stage.height), VW: innerWidth, VH: innerHeight, Fit: fit,
		Videos: v.videoWidth,
		StatsOff: !shown(document.querySelector('#call-stats')),
		ChatOff: !shown(document.querySelector('#chat')),
		ListOff: !shown(document.querySelector('.sidebar')),
	};
})()`

// TestCallScreenGivesTheVideoTheRoom (issue 14, item 7): in a call the remote video gets the room. On a 1280 px
// desktop the list of people goes and the chat stays closed, so the picture is most of the window's width (it was
// 596 px of 1280); a chat
// message shows as a badge on the Chat button (the chat opens when asked); the quality readout is a toggle that is
// remembered; the video fills a phone's screen and fits on request (and fills the desktop's on request, or with a
// double-click); full screen and picture-in-picture work.
func TestCallScreenGivesTheVideoTheRoom(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "", withViewport(390, 844))
	connect(t, alice, bob)
	for _, p := range []*page{alice, bob} {
		p.waitFor("the remote video in view", `document.querySelector('#remote-overlay').hidden && document.querySelector('#call-state').textContent === 'Connected'`)
	}

	// The desktop: the picture spans most of the window, with nothing opened that was not asked for.
	v := value[shownVideo](alice, shownVideoJS)
	alice.screenshot("callscreen-desktop")
	if !v.ChatOff || !v.StatsOff || !v.ListOff {
		t.Errorf("alice's call screen shows chat %v, quality readout %v, list %v: want none until asked", !v.ChatOff, !v.StatsOff, !v.ListOff)
	}
	if v.Fit != "contain" || v.W < 0.7*v.VW {
		t.Errorf("alice's remote video is %.0f×%.0f (%s) in a %.0f×%.0f window: want it to fit, at least 70%% of the width",
			v.W, v.H, v.Fit, v.VW, v.VH)
	}

	// A message from bob: a badge on alice's Chat button; the chat opens when she asks.
	bob.waitFor("chat ready", `tandem.chatReady`)
	bob.must(`document.querySelector('#chat-input').value = 'Hi!'; document.querySelector('#chat-form').requestSubmit()`)
	alice.waitFor("the unread badge", `document.querySelector('#chat-unread').textContent === '1' && !document.querySelector('#chat-unread').hidden`)
	if value[bool](alice, `!document.querySelector('#chat').hidden`) {
		t.Error("a message opened alice's chat by itself")
	}
	alice.clickAt("#chat-button")
	alice.waitFor("the chat open, the badge gone", `!document.querySelector('#chat').hidden && document.querySelector('#chat-unread').hidden`)
	alice.screenshot("callscreen-desktop-chat")
	if v := value[shownVideo](alice, shownVideoJS); v.W < 0.6*v.VW {
		t.Errorf("with the chat open alice's remote video is %.0f px wide of %.0f, want at least 60%%", v.W, v.VW)
	}
	alice.clickAt("#chat-close")

	// The quality readout, on request, and remembered for the next call.
	alice.clickAt("#stats-button")
	alice.waitFor("the quality readout shown", `!document.querySelector('#call-stats').hidden && /ms$/.test(document.querySelector('#stat-rtt').textContent) && `+pressedJS("#stats-button"))
	alice.screenshot("callscreen-desktop-stats")
	alice.clickAt("#stats-button")
	alice.waitFor("the quality readout hidden", `document.querySelector('#call-stats').hidden && !(`+pressedJS("#stats-button")+`)`)

	// Fill on request, and a double-click on the video to fit again.
	alice.clickAt("#fill-button")
	alice.waitFor("the video filling the stage", `getComputedStyle(document.querySelector('#remote-video')).objectFit === 'cover' && `+pressedJS("#fill-button"))
	alice.screenshot("callscreen-desktop-fill")
	alice.doubleClickAt("#remote-video")
	alice.waitFor("the video fitting again", `getComputedStyle(document.querySelector('#remote-video')).objectFit === 'contain'`)

	// Full screen (a real click: browsers allow it only on a user's gesture), and back.
	alice.waitFor("the full-screen button", `!document.querySelector('#fullscreen-button').hidden`)
	alice.clickAt("#fullscreen-button")
	alice.waitFor("full screen", `document.fullscreenElement === document.querySelector('#call-view') && `+pressedJS("#fullscreen-button"))
	alice.screenshot("callscreen-desktop-fullscreen")
	alice.clickAt("#fullscreen-button")
	alice.waitFor("out of full screen", `document.fullscreenElement === null && !(`+pressedJS("#fullscreen-button")+`)`)

	// Picture-in-picture, where the browser has it.
	if value[bool](alice, `document.pictureInPictureEnabled`) {
		alice.clickAt("#pip-button")
		alice.waitFor("picture-in-picture", `document.pictureInPictureElement === document.querySelector('#remote-video') && `+pressedJS("#pip-button"))
		alice.clickAt("#pip-button")
		alice.waitFor("out of picture-in-picture", `document.pictureInPictureElement === null`)
	} else {
		t.Log("this browser has no picture-in-picture: its button must not show")
		if value[bool](alice, `!document.querySelector('#pip-button').hidden`) {
			t.Error("the picture-in-picture button shows in a browser that has none")
		}
	}

	// The phone: the picture fills the screen; fit on request.
	v = value[shownVideo](bob, shownVideoJS)
	bob.screenshot("callscreen-phone")
	if !v.StatsOff {
		t.Error("bob's phone shows the quality readout unasked")
	}
	if v.Fit != "cover" || v.W*v.H < 0.75*v.VW*v.VH {
		t.Errorf("bob's remote video is %.0f×%.0f (%s) on a %.0f×%.0f phone: want it to fill at least 75%% of the screen",
			v.W, v.H, v.Fit, v.VW, v.VH)
	}
	bob.clickAt("#fill-button")
	bob.waitFor("the video fitting the phone", `getComputedStyle(document.querySelector('#remote-video')).objectFit === 'contain' && !(`+pressedJS("#fill-button")+`)`)
	bob.screenshot("callscreen-phone-fit")
	bob.waitFor("the hang-up button on screen", `(() => {
		const r = document.querySelector('#hangup-button').getBoundingClientRect();
		return r.width > 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;
	})()`)

	// The next call: the quality readout comes back if it was left on.
	alice.clickAt("#stats-button")
	alice.clickAt("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")
	if value[bool](alice, `!document.querySelector('#call-stats').hidden || !document.querySelector('#view-tools').hidden`) {
		t.Error("the quality readout or the view buttons show on the idle page")
	}
	connect(t, bob, alice)
	alice.waitFor("the quality readout shown again", `!document.querySelector('#call-stats').hidden`)
}
