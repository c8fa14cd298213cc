package e2e

import (
	"strings"
	"testing"
)

// TestMissedWhileInCall (issue 14, item 3): a user who was busy is told afterwards who tried to reach them. alice
// and bob are in a call; carol calls bob and hears he is busy; bob's page lists carol's call as missed at once,
// and says who called once his call is over; one tap on the entry calls carol back.
func TestMissedWhileInCall(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "")
	carol := openTandem(t, srv, "carol", "", withViewport(390, 844))

	connect(t, alice, bob)
	carol.callFromList("bob")
	carol.waitNotice("bob is in another call")
	carol.waitRecent("bob", "busy")

	// During the call: in bob's recent calls, not yet a notice over his call.
	if e := bob.waitRecent("carol", "missed_busy"); !e.Missed || !strings.Contains(e.Text, "Missed: you were in a call") {
		t.Errorf("bob's recent call from carol reads %q (marked missed %v)", e.Text, e.Missed)
	}
	if strings.Contains(bob.notices(), "carol") {
		t.Errorf("bob is told of carol's call during his own: %q", bob.notices())
	}
	if value[string](bob, `document.querySelector('#missed-count').textContent`) != "1" {
		t.Error("carol's call is not counted as missed on bob's Recent tab")
	}

	alice.click("#hangup-button")
	bob.waitPhase("idle")
	bob.waitNotice("While you were in a call, “carol” tried to call you")
	bob.must(finishAnimationsJS)
	bob.screenshot("missed-while-busy-notice-desktop")
	bob.showRecent()
	bob.screenshot("missed-while-busy-recent-desktop")
	bob.chooseLanguage("zh-Hans")
	bob.waitFor("the entry in Chinese", `document.querySelector('#recent-list .recent-row[data-outcome="missed_busy"]').textContent.includes('未接')`)
	bob.screenshot("missed-while-busy-recent-desktop-zh")
	bob.chooseLanguage("en")

	// One tap calls carol back.
	bob.clickAt(`#recent-list .recent-row[data-outcome="missed_busy"] .recent-call`)
	carol.waitIncoming("bob")
	carol.must(finishAnimationsJS)
	carol.screenshot("missed-call-back-phone")
	// On a 390 px phone every answer button is whole on screen, and Accept is tapped where it is drawn.
	if off := value[string](carol, `[...document.querySelectorAll('#incoming .incoming-actions .btn')].filter(b => {
		const r = b.getBoundingClientRect(); return r.left < 0 || r.right > innerWidth || r.width < 44 }).map(b => b.id).join(' ')`); off != "" {
		t.Errorf("answer buttons cut off on a phone: %s", off)
	}
	carol.clickAt("#accept-button")
	bob.waitPhase("active")
	carol.waitPhase("active")
}
