package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// recentEntry is one row of a page's recent calls, as shown.
type recentEntry struct {
	Peer    string
	Outcome string
	Missed  bool
	Text    string
}

const recentJS = `[...document.querySelectorAll('#recent-list .recent-row')].map((li) => ({
	Peer: li.querySelector('.recent-call').dataset.peer,
	Outcome: li.dataset.outcome,
	Missed: li.classList.contains('recent-missed'),
	Text: li.textContent,
}))`

// showRecent opens the page's Recent tab, as a person would.
func (p *page) showRecent() {
	p.t.Helper()
	p.clickAt("#tab-recent")
	p.waitFor("the recent calls", `!document.querySelector('#panel-recent').hidden`)
}

// waitRecent waits until the newest of the page's recent calls is with peer and ended with outcome.
func (p *page) waitRecent(peer, outcome string) recentEntry {
	p.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		entries := value[[]recentEntry](p, recentJS)
		if len(entries) > 0 && entries[0].Peer == peer && entries[0].Outcome == outcome {
			return entries[0]
		}
		if time.Now().After(deadline) {
			p.fatalf("timed out waiting for the newest recent call to be with %s, %s; the list: %+v", peer, outcome, entries)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRecentCalls (issue 14, item 3): how each call ended stays on the device, in a Recent list: declined, no
// answer, missed (marked, and counted on the tab until looked at), answered (with its duration), busy; a tap on
// an entry calls back; a call that came while the page was calling someone else (its offer crossed ours, so it
// never rang) is told after that call and listed as missed; the list survives a reload, and is bounded however
// much is in storage, and a damaged one is ignored.
func TestRecentCalls(t *testing.T) {
	srv := startTandem(t)
	alice := openTandem(t, srv, "alice", "")
	bob := openTandem(t, srv, "bob", "ringTimeout=3", withViewport(390, 844))
	carol := openTandem(t, srv, "carol", "", withScript(gateJS("offer")))

	// alice calls bob, who declines.
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	bob.click("#decline-button")
	alice.waitPhase("idle")
	if e := alice.waitRecent("bob", "declined"); e.Missed || !strings.Contains(e.Text, "Declined") {
		t.Errorf("alice's recent call to bob reads %q (missed %v)", e.Text, e.Missed)
	}
	if e := bob.waitRecent("alice", "declined"); e.Missed || !strings.Contains(e.Text, "You declined") {
		t.Errorf("bob's recent call from alice reads %q (missed %v)", e.Text, e.Missed)
	}

	// bob calls alice, who does not answer: bob gives up after 3 s; alice missed it.
	bob.callFromList("alice")
	alice.waitIncoming("bob")
	bob.waitNotice("alice didn’t answer")
	alice.waitPhase("idle")
	bob.waitRecent("alice", "no_answer")
	if e := alice.waitRecent("bob", "missed"); !e.Missed || !strings.Contains(e.Text, "Missed call") {
		t.Errorf("alice's missed call from bob reads %q, marked missed %v", e.Text, e.Missed)
	}
	alice.waitFor("one missed call counted on the Recent tab", `document.querySelector('#missed-count').textContent === '1' && !document.querySelector('#missed-count').hidden`)
	alice.showRecent()
	alice.waitFor("the count gone once the list is seen", `document.querySelector('#missed-count').hidden`)
	alice.screenshot("recent-desktop")

	// One tap calls bob back.
	alice.clickAt(`#recent-list .recent-row:first-child .recent-call`)
	bob.waitIncoming("alice")
	bob.click("#accept-button")
	alice.assertMedia(tandemMedia)
	alice.waitFor("a second of the call", `/^0:0[1-9]$/.test(document.querySelector('#call-duration').textContent)`)
	alice.click("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")
	if e := alice.waitRecent("bob", "answered"); !strings.Contains(e.Text, "Outgoing") || !strings.Contains(e.Text, " sec") {
		t.Errorf("alice's answered call reads %q, want Outgoing and its duration", e.Text)
	}
	bob.waitRecent("alice", "answered")
	bob.showRecent()
	bob.screenshot("recent-phone")

	// carol calls bob while he is in a call with alice: busy, on carol's side.
	connect(t, alice, bob)
	carol.callFromList("bob")
	carol.waitNotice("bob is in another call")
	carol.waitRecent("bob", "busy")
	alice.click("#hangup-button")
	bob.waitPhase("idle")

	// alice calls carol just as carol calls bob: alice's offer is held back from carol's page until carol is
	// calling bob (so it crosses hers); it never rings, and carol is told after her call.
	carol.must(`tandemGate.closed = true`)
	alice.callFromList("carol")
	carol.waitFor("alice's offer held back", `tandemGate.held() === 1`)
	carol.callFromList("bob")
	bob.waitIncoming("carol")
	carol.must(`tandemGate.open()`)
	carol.waitRecent("alice", "missed_busy")
	if value[bool](carol, `!document.querySelector('#incoming').hidden`) {
		t.Error("alice's call rang on carol's page while carol was calling bob")
	}
	bob.click("#accept-button")
	carol.waitPhase("active")
	alice.waitPhase("idle")
	carol.click("#hangup-button")
	carol.waitNotice("While you were in a call, “alice” tried to call you")
	e := value[[]recentEntry](carol, recentJS)
	if len(e) < 2 || e[1].Peer != "alice" || !e[1].Missed || !strings.Contains(e[1].Text, "you were in a call") {
		t.Errorf("carol's recent calls: %+v, want the call with bob, then alice's missed while she was in a call", e)
	}
	carol.screenshot("recent-missed-while-busy")

	// A reload keeps the list.
	before := len(value[[]recentEntry](bob, recentJS))
	bob.reload()
	bob.waitFor("bob signed back in", `document.body.dataset.view === 'call' && tandem.signaling === 'online'`)
	bob.showRecent()
	if after := len(value[[]recentEntry](bob, recentJS)); after != before || after == 0 {
		t.Errorf("bob's page lists %d recent calls after a reload, %d before", after, before)
	}

	// However much is in storage, the page keeps 50; a damaged list is ignored.
	bob.must(`localStorage.setItem('tandem.recent.bob', JSON.stringify(Array.from({ length: 5000 }, (_, i) =>
		({ peer: 'caller' + i, dir: 'in', outcome: 'missed', at: Date.now() - i * 60000 })).concat([{ evil: true }])))`)
	bob.reload()
	bob.waitFor("bob signed back in", `document.body.dataset.view === 'call' && tandem.signaling === 'online'`)
	bob.showRecent()
	bob.waitFor("50 recent calls", `document.querySelectorAll('#recent-list .recent-row').length === 50`)
	// Lists of fifteen names that signed in on this device long ago: the next call of bob's keeps ten names' lists.
	bob.must(`for (let i = 0; i < 15; i++) localStorage.setItem('tandem.recent.old' + i, JSON.stringify([{ peer: 'x', dir: 'in', outcome: 'missed', at: i }]))`)
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	bob.click("#decline-button")
	bob.waitRecent("alice", "declined")
	if n := value[int](bob, `JSON.parse(localStorage.getItem('tandem.recent.bob')).length`); n != 50 {
		t.Errorf("bob's device keeps %d recent calls, want 50", n)
	}
	keys := value[[]string](bob, `Object.keys(localStorage).filter((k) => k.startsWith('tandem.recent.')).sort()`)
	if len(keys) != 10 || !slices.Contains(keys, "tandem.recent.alice") || !slices.Contains(keys, "tandem.recent.carol") {
		t.Errorf("the device keeps the recent calls of %d names, want 10 with alice's and carol's: %q", len(keys), keys)
	}
	bob.must(`localStorage.setItem('tandem.recent.bob', '{"not": a list')`)
	bob.reload()
	bob.waitFor("bob signed back in", `document.body.dataset.view === 'call' && tandem.signaling === 'online'`)
	bob.showRecent()
	bob.waitFor("no recent calls, and no error", `document.querySelectorAll('#recent-list .recent-row').length === 0 && document.querySelector('#recent-list').textContent.includes('No calls yet')`)
}
