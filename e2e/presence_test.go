package e2e

import (
	"testing"
	"time"

	"tandem/internal/redistest"
)

// livePush bounds how long a change may take to show on another page in TestLivePresence: far above the second
// the server's pushes take, far below the 30 s the page would wait if it only asked again (the old poll). It is
// not a performance figure (BENCHMARKS.md has those), only what tells a push from a poll on a busy machine.
const livePush = 10 * time.Second

// TestLivePresence (issue 14, item 1): the README's first step, two tabs with two names, and what follows. The
// first page sees the second sign in without doing anything, sees two people go busy when one calls the other
// and free again, keeps its keyboard focus on the person it was on while the list changes, and, while it is in a
// call itself, sees someone sign out; the count beside "People online" follows each time.
func TestLivePresence(t *testing.T) {
	srv := startTandem(t)
	first := openTandem(t, srv, "first", "")
	first.waitFor("first alone", `document.querySelector('#people-count').textContent === '0'`)

	second := openTandem(t, srv, "second", "")
	shown := time.Now()
	first.waitFor("second in first's list", `document.querySelector('.person[data-name="second"]') && document.querySelector('#people-count').textContent === '1'`)
	if d := time.Since(shown); d > livePush {
		t.Errorf("second showed on first's page %s after signing in: not pushed", d.Round(time.Millisecond))
	} else {
		t.Logf("second showed on first's page %s after signing in", d.Round(time.Millisecond))
	}
	first.screenshot("presence-second-shows")

	// first is on second's button (a keyboard user about to call): the list changes under it, the focus stays.
	first.must(`document.querySelector('.person[data-name="second"]').focus()`)
	third := openTandem(t, srv, "third", "")
	first.waitFor("third in first's list", `document.querySelector('.person[data-name="third"]') && document.querySelector('#people-count').textContent === '2'`)
	if !value[bool](first, `document.activeElement && document.activeElement.matches('.person[data-name="second"]')`) {
		t.Errorf("the list's update took first's focus away from second's button: it is on %s",
			value[string](first, `document.activeElement ? document.activeElement.outerHTML.slice(0, 120) : 'nothing'`))
	}

	// second calls third: both show busy on first's page, and free again when the call ends.
	second.callFromList("third")
	third.waitIncoming("second")
	busy := time.Now()
	first.waitFor("second and third busy", `document.querySelector('.person[data-name="second"] .tag-busy') && document.querySelector('.person[data-name="third"] .tag-busy')`)
	if d := time.Since(busy); d > livePush {
		t.Errorf("the call showed on first's page after %s: not pushed", d.Round(time.Millisecond))
	}
	first.screenshot("presence-busy")
	second.click("#hangup-button")
	second.waitPhase("idle")
	third.waitPhase("idle")
	first.waitFor("second and third free again", `document.querySelector('.person[data-name="second"]') && !document.querySelector('.person .tag-busy')`)

	// first is in a call (ringing third) when second signs out: the list goes on changing.
	first.click(`.person[data-name="third"]`)
	third.waitIncoming("first")
	first.waitFor("first calling", `tandem.phase !== 'idle'`)
	second.click("#logout-button")
	gone := time.Now()
	first.waitFor("second gone from first's list, during first's call",
		`!document.querySelector('.person[data-name="second"]') && document.querySelector('#people-count').textContent === '1'`)
	if d := time.Since(gone); d > livePush {
		t.Errorf("second's sign-out showed on first's page after %s: not pushed", d.Round(time.Millisecond))
	}
	if phase := value[string](first, `tandem.phase`); phase == "idle" {
		t.Errorf("first's call ended before the list changed: the test did not check a list during a call")
	}
	first.click("#hangup-button")
	first.waitPhase("idle")
	first.waitFor("the list after the call", `document.querySelector('.person[data-name="third"]') && !document.querySelector('.person .tag-busy') && document.querySelector('#people-count').textContent === '1'`)
	first.screenshot("presence-after")
}

// TestLivePresenceAcrossNodes: the same on a cluster of two nodes on Redis, with each page on another node than
// the people it watches: a sign-in, a call and a sign-out on node 1 show on a page of node 0.
func TestLivePresenceAcrossNodes(t *testing.T) {
	requireBrowser(t)
	r := redistest.Start(t)
	nodes := []*tandem{startTandem(t, clusterNode(r.URL(), "node0")), startTandem(t, clusterNode(r.URL(), "node1"))}
	lb := startSpreader(t, nodes[0].addr, nodes[1].addr)
	open := func(name string, node int) *page {
		t.Helper()
		lb.pin.Store(int32(node))
		p := openPage(t, name, lb.url()+"/")
		p.signIn(name)
		lb.pin.Store(-1)
		return p
	}
	first := open("first", 0)
	first.waitFor("first alone", `document.querySelector('#people-count').textContent === '0'`)
	second := open("second", 1)
	shown := time.Now()
	first.waitFor("second (node 1) in first's list (node 0)", `document.querySelector('.person[data-name="second"]') && document.querySelector('#people-count').textContent === '1'`)
	if d := time.Since(shown); d > livePush {
		t.Errorf("second showed on first's page %s after signing in: not pushed", d.Round(time.Millisecond))
	}
	if a, b := nodes[0].server.Online(), nodes[1].server.Online(); a != 1 || b != 1 {
		t.Fatalf("users on the nodes: %d and %d, want one each", a, b)
	}
	third := open("third", 1)
	first.waitFor("third in first's list", `document.querySelector('.person[data-name="third"]')`)
	second.callFromList("third")
	third.waitIncoming("second")
	first.waitFor("second and third busy", `document.querySelector('.person[data-name="second"] .tag-busy') && document.querySelector('.person[data-name="third"] .tag-busy')`)
	second.click("#hangup-button")
	first.waitFor("second and third free again", `document.querySelector('.person[data-name="second"]') && !document.querySelector('.person .tag-busy')`)
	second.click("#logout-button")
	gone := time.Now()
	first.waitFor("second gone from first's list", `!document.querySelector('.person[data-name="second"]') && document.querySelector('#people-count').textContent === '1'`)
	if d := time.Since(gone); d > livePush {
		t.Errorf("second's sign-out showed on first's page after %s: not pushed", d.Round(time.Millisecond))
	}
	first.screenshot("presence-cluster")
}

// oldServerJS makes the page talk to tandem as to a server without live presence: its users requests go without
// "watch", so the replies never say "watching"; window.usersAsked counts the requests.
const oldServerJS = `(() => {
	const Native = window.WebSocket;
	window.usersAsked = 0;
	window.WebSocket = class extends Native {
		send(data) {
			try {
				const m = JSON.parse(data);
				if (m.type === 'users') {
					window.usersAsked++;
					delete m.watch;
					data = JSON.stringify(m);
				}
			} catch {}
			return super.send(data);
		}
	};
})()`

// TestPresenceFallsBackToPolling: against a server that does not push the list (one older than live presence),
// the page asks for it again every listRefresh seconds (30 by default; 1 here) while idle, and so still sees a
// new user.
func TestPresenceFallsBackToPolling(t *testing.T) {
	srv := startTandem(t)
	first := openTandem(t, srv, "first", "listRefresh=1", withScript(oldServerJS))
	first.waitFor("first alone", `document.querySelector('#people-count').textContent === '0'`)
	asked := value[int](first, `window.usersAsked`)
	openTandem(t, srv, "second", "")
	first.waitFor("second in first's list, by asking again", `document.querySelector('.person[data-name="second"]')`)
	if now := value[int](first, `window.usersAsked`); now <= asked {
		t.Errorf("the page asked for the list %d times before second came and %d after: it did not poll", asked, now)
	}
}
