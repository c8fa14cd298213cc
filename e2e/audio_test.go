package e2e

import (
	"fmt"
	"testing"
)

// rtpCounts is what getStats says a page sends and receives of each kind.
type rtpCounts struct {
	AudioIn, AudioOut    int // packets received and sent
	VideoIn, VideoOut    int // bytes received and sent
	Frames               int // video frames decoded
	VideoLines, Inactive int // the video transceivers, and how many of them are negotiated inactive
}

const rtpCountsJS = `(async () => {
	const out = { AudioIn: 0, AudioOut: 0, VideoIn: 0, VideoOut: 0, Frames: 0, VideoLines: 0, Inactive: 0 };
	const pc = tandem.pc;
	if (!pc) return out;
	(await pc.getStats()).forEach((s) => {
		if (s.type === 'inbound-rtp' && s.kind === 'audio') out.AudioIn += s.packetsReceived || 0;
		if (s.type === 'outbound-rtp' && s.kind === 'audio') out.AudioOut += s.packetsSent || 0;
		if (s.type === 'inbound-rtp' && s.kind === 'video') { out.VideoIn += s.bytesReceived || 0; out.Frames += s.framesDecoded || 0; }
		if (s.type === 'outbound-rtp' && s.kind === 'video') out.VideoOut += s.bytesSent || 0;
	});
	for (const t of pc.getTransceivers()) {
		if (t.receiver.track.kind !== 'video') continue;
		out.VideoLines++;
		if (t.currentDirection === 'inactive') out.Inactive++;
	}
	return out;
})()`

// assertAudioOnly waits until audio flows both ways on a page (a second of it: fifty packets each way), then checks
// that no video went either way, and that the page says it is an audio call and shows no video.
func assertAudioOnly(t *testing.T, p *page) {
	t.Helper()
	p.waitFor("an audio call, connected", `tandem.phase === 'active' && tandem.pc && tandem.pc.connectionState === 'connected'`)
	p.waitFor("a second of audio each way", fmt.Sprintf(`(async () => { const c = await %s; return c.AudioIn >= 50 && c.AudioOut >= 50; })()`, rtpCountsJS))
	c := value[rtpCounts](p, rtpCountsJS)
	if c.VideoIn != 0 || c.VideoOut != 0 || c.Frames != 0 {
		t.Errorf("%s: video went in an audio call: %d bytes in, %d bytes out, %d frames decoded", p.label, c.VideoIn, c.VideoOut, c.Frames)
	}
	if c.VideoLines != c.Inactive {
		t.Errorf("%s: %d of %d video transceivers are inactive in an audio call", p.label, c.Inactive, c.VideoLines)
	}
	p.waitFor("the page saying it is an audio call", `document.querySelector('#stage-detail').textContent.includes('Audio call') && !document.querySelector('#remote-overlay').hidden`)
	type shown struct{ Local, Remote, CamDisabled, FillShown bool }
	s := value[shown](p, `(() => ({
		Local: getComputedStyle(document.querySelector('.local')).display !== 'none',
		Remote: getComputedStyle(document.querySelector('#remote-video')).visibility !== 'hidden',
		CamDisabled: document.querySelector('#cam-button').disabled,
		FillShown: !document.querySelector('#fill-button').hidden,
	}))()`)
	if s.Local || s.Remote || !s.CamDisabled || s.FillShown {
		t.Errorf("%s: in an audio call the page shows its preview %v, the remote video %v, the fill button %v; camera button disabled %v",
			p.label, s.Local, s.Remote, s.FillShown, s.CamDisabled)
	}
}

// TestAudioOnlyCalls (issue 14, item 8): a call without video, placed from the list (or by name), and a video call
// answered without video. Either way no video goes in either direction (the video line is negotiated inactive),
// sound does, and both pages say it is an audio call; the next call has video again.
func TestAudioOnlyCalls(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "", withViewport(390, 844))

	// alice calls bob without video from the list; bob's page rings for an audio call, with no choice to make.
	alice.search("bob")
	alice.click(`.person-audio[data-name="bob"]`)
	bob.waitIncoming("alice")
	if got := value[string](bob, `document.querySelector('#incoming-detail').textContent`); got != "is calling you, audio only" {
		t.Errorf("bob's page rings with %q, want it to say the call is audio only", got)
	}
	if value[bool](bob, `!document.querySelector('#accept-audio-button').hidden`) {
		t.Error("bob's page offers to answer without video a call that has none")
	}
	if got := value[string](bob, `document.querySelector('#stage-detail').textContent`); got != "An audio call. Answer with Accept or Decline." {
		t.Errorf("bob's call screen says %q, want it to offer only Accept and Decline for an audio call", got)
	}
	bob.screenshot("audio-ringing-phone")
	bob.click("#accept-button")
	assertAudioOnly(t, alice)
	assertAudioOnly(t, bob)
	alice.screenshot("audio-call-desktop")
	bob.screenshot("audio-call-phone")
	bob.click("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")

	// bob calls alice with video; she answers without.
	bob.search("alice")
	bob.click(`.person[data-name="alice"]`)
	alice.waitIncoming("bob")
	alice.screenshot("audio-ringing-video-call")
	alice.click("#accept-audio-button")
	assertAudioOnly(t, alice)
	assertAudioOnly(t, bob)
	bob.waitNotice("alice answered without video")
	alice.click("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")

	// By name, without video.
	alice.must(`document.querySelector('#dial-name').value = 'bob'`)
	alice.click("#dial-audio-button")
	bob.waitIncoming("alice")
	bob.click("#accept-button")
	assertAudioOnly(t, bob)
	bob.click("#hangup-button")
	bob.waitPhase("idle")
	alice.waitPhase("idle")

	// The next call is a video call again, with the camera button back.
	connect(t, alice, bob)
	if value[bool](alice, `document.querySelector('#cam-button').disabled || document.body.hasAttribute('data-audio-call')`) {
		t.Error("alice's page is still in audio-call mode in a video call")
	}
}
