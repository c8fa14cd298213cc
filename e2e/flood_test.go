package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"

	"tandem/internal/webrtctest"
)

// heap is what Runtime.getHeapUsage says of a page's JavaScript heap, in bytes.
type heap struct {
	used, embedder float64
}

func (h heap) total() float64 { return h.used + h.embedder }

func (h heap) String() string {
	return fmt.Sprintf("%.1f MiB (V8 %.1f MiB, DOM %.1f MiB)", h.total()/(1<<20), h.used/(1<<20), h.embedder/(1<<20))
}

// heapAfterGC collects the page's garbage and returns how much of its heap is still in use: what the page keeps.
func (p *page) heapAfterGC() heap {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	// Twice: a first collection can leave what finalizers and weak callbacks free for the second.
	for range 2 {
		if _, err := chromedp.Call(ctx, heapprofiler.CollectGarbage, cdp.Empty{}); err != nil {
			p.fatalf("HeapProfiler.collectGarbage: %v", err)
		}
	}
	u, err := chromedp.Call(ctx, cdpruntime.GetHeapUsage, cdp.Empty{})
	if err != nil {
		p.fatalf("Runtime.getHeapUsage: %v", err)
	}
	return heap{used: u.UsedSize, embedder: u.EmbedderHeapUsedSize}
}

// relayed reads tandem_messages_relayed_total for one message type from the server's registry.
func relayed(t *testing.T, srv *tandem, typ string) float64 {
	return counter(t, srv, "tandem_messages_relayed_total", "type", typ)
}

// counter reads the counter name with label=value from the server's registry.
func counter(t *testing.T, srv *tandem, name, label, value string) float64 {
	t.Helper()
	mfs, err := srv.server.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// floodCandidate returns the i-th candidate of a flood, as large as a signaling message allows (about 60 KB): even
// ones have a huge candidate line, odd ones a short (invalid) line and a huge field no candidate has.
func floodCandidate(i int) json.RawMessage {
	junk := fmt.Sprintf("%06d", i) + strings.Repeat("x", 60000)
	var c map[string]any
	if i%2 == 0 {
		c = map[string]any{"candidate": "candidate:" + junk, "sdpMid": "0", "sdpMLineIndex": 0}
	} else {
		c = map[string]any{"candidate": fmt.Sprintf("candidate:flood%d", i), "sdpMid": "0", "sdpMLineIndex": 0, "padding": junk}
	}
	raw, _ := json.Marshal(c)
	return raw
}

// TestRingingCandidateFlood (fault 12): a caller rings a browser user, who does not pick up, and sends it large
// candidates as fast as the server lets it, for seconds. The page keeps only a bounded number of candidates for the
// ringing call: its heap stays small, it stays responsive, it says in the console that it dropped the rest, and the
// call still connects when the person accepts (the caller's real candidates, which came first, were kept).
func TestRingingCandidateFlood(t *testing.T) {
	const (
		rate      = 200 // the server's default message rate per connection
		floodFor  = 5 * time.Second
		heapBound = 8 << 20 // what the page may keep of the flood
		slowEval  = 2 * time.Second
	)
	srv := startTandem(t)
	bob := openTandem(t, srv, "bob", "incomingTimeout=300")

	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	mallory, err := webrtctest.NewPeer(ctx, api, srv.wsURL, "mallory", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mallory.Close) // before the server stops
	gatheredAll := webrtc.GatheringCompletePromise(mallory.PC)
	if err := mallory.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gatheredAll: // every real candidate of mallory's has been sent: the flood comes after them
	case <-ctx.Done():
		t.Fatal("mallory's candidates were not gathered")
	}
	bob.waitIncoming("mallory")
	// mallory's trickled candidates reach bob before the flood starts (they are sent from pion's callbacks, which
	// may run after gathering completes; a flood spends the budget a caller has before the callee answers). When
	// pion put them all in the offer instead, none is trickled: the wait ends after a few seconds.
	for deadline := time.Now().Add(5 * time.Second); value[int](bob, `tandem.heldCandidates`) < 1 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	before := bob.heapAfterGC()
	relayedBefore := relayed(t, srv, "candidate")
	refused := func() float64 { return counter(t, srv, "tandem_errors_total", "code", "not_answered") }
	refusedBefore := refused()

	// The flood: candidates at the server's rate, in tens every 50 ms, from another goroutine; meanwhile the page is asked
	// something every 200 ms, and must answer promptly.
	floodDone := make(chan int, 1)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		sent := 0
		defer func() { floodDone <- sent }()
		start := time.Now()
		for total := rate * int(floodFor/time.Second); sent < total; {
			<-tick.C
			// As many as the rate allows by now: a late tick is made up for, and the server's burst absorbs it.
			due := min(total, int(time.Since(start).Seconds()*rate))
			for ; sent < due; sent++ {
				if err := mallory.C.SendCandidate(ctx, "bob", floodCandidate(sent)); err != nil {
					t.Errorf("sending candidate %d: %v", sent, err)
					return
				}
			}
		}
	}()
	var slowest time.Duration
	var sent int
	for waiting := true; waiting; {
		select {
		case sent = <-floodDone:
			waiting = false
		case <-time.After(200 * time.Millisecond):
			start := time.Now()
			if phase := value[string](bob, `tandem.phase`); phase != "incoming" {
				t.Fatalf("bob's page is %q during the flood, want it ringing", phase)
			}
			slowest = max(slowest, time.Since(start))
		}
	}
	deadline := time.Now().Add(wait)
	for relayed(t, srv, "candidate")-relayedBefore+refused()-refusedBefore < float64(sent) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // the server relays or refuses the last of them
	}
	got := relayed(t, srv, "candidate") - relayedBefore
	t.Logf("mallory sent %d candidates of ~60 KB in %s; the server relayed %.0f to bob", sent, floodFor, got)
	if sent < rate*int(floodFor/time.Second) {
		t.Fatalf("mallory sent only %d candidates: the flood did not happen", sent)
	}
	// The server lets a caller whom bob has not accepted push him only a small budget (docs/limits.md: 64
	// messages and 128 KiB before the answer), so most of the flood is refused there; the page's own bounds are
	// for what gets through, and for servers without that budget.
	if got > 64 {
		t.Errorf("the server relayed %.0f of mallory's candidates to bob, who has not answered: more than a stranger's budget", got)
	}
	// The answer to a search bob makes now comes after every candidate relayed to him: once the page shows it, it
	// has handled them all.
	bob.search("mallory")
	bob.waitFor("the answer to bob's search", `tandem.users && tandem.users.query === 'mallory' && document.querySelector('.person[data-name="mallory"]')`)
	after := bob.heapAfterGC()
	t.Logf("bob's heap after GC: %s before the flood, %s after it; slowest answer during the flood %s", before, after, slowest)
	if grew := after.total() - before.total(); grew > heapBound {
		t.Errorf("bob's heap grew by %.1f MiB while ringing under the flood, want at most %d MiB: the page keeps what it should drop",
			grew/(1<<20), heapBound>>20)
	}
	if slowest > slowEval {
		t.Errorf("bob's page took %s to answer during the flood, want under %s", slowest, slowEval)
	}
	bob.waitIncoming("mallory")
	bob.screenshot("flood-ringing")

	if held := value[int](bob, `tandem.heldCandidates`); held < 1 || held > 100 {
		t.Errorf("bob's page holds %d candidates for the ringing call, want mallory's real ones and at most 100", held)
	}
	// The page says what it dropped, at debug level, and counts it.
	dropped := value[float64](bob, `tandem.dropped.candidates`)
	// The flood's first candidate (an even one, over the page's size bound) fits in a stranger's budget: the page
	// gets it, and must drop it.
	if got >= 1 && dropped < 1 {
		t.Errorf("bob's page counts %.0f dropped candidates, want the oversized ones relayed to it dropped", dropped)
	}
	if logs := bob.logs.String(); !strings.Contains(logs, `console.debug: "tandem: dropped`) {
		t.Errorf("no debug message in bob's console about dropped candidates:\n%s", lastLines(logs, 20))
	}

	// Bob accepts: the real candidates, which came before the flood, were kept, and the call connects.
	bob.click("#accept-button")
	bob.waitPhase("active")
	if err := mallory.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	bob.waitFor("connected to mallory", `tandem.pc && tandem.pc.connectionState === 'connected'`)
	types := value[[]string](bob, remoteCandidateTypesJS)
	t.Logf("bob's remote candidates: %v", types)
	if !contains(types, "host") {
		t.Errorf("bob's remote candidates are %v: mallory's host candidate, sent before the flood, was not kept", types)
	}
}

// remoteCandidateTypesJS lists the types of the remote candidates tandem.pc knows.
const remoteCandidateTypesJS = `(async () => {
	const out = [];
	(await tandem.pc.getStats()).forEach((s) => { if (s.type === 'remote-candidate') out.push(s.candidateType); });
	return out;
})()`

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestRingingKeepsRealCandidates: the bound on what a ringing call holds drops nothing of a real browser's call. Bob
// accepts only once every candidate alice's browser gathered has reached his page: all are held, none dropped, and
// the call connects with alice's own candidates (not just the peer-reflexive ones ICE would find without them).
func TestRingingKeepsRealCandidates(t *testing.T) {
	srv := startTandem(t)
	alice, bob := pair(t, srv, "alice", "bob", "")
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	alice.waitFor("alice's candidates gathered", `tandem.pc && tandem.pc.iceGatheringState === 'complete'`)
	n := value[int](alice, `tandem.pc.localDescription.sdp.split('\r\n').filter((l) => l.startsWith('a=candidate:')).length`)
	t.Logf("alice's browser gathered %d candidates", n)
	if n == 0 {
		t.Fatal("alice's browser gathered no candidates")
	}
	bob.waitFor(fmt.Sprintf("all %d of alice's candidates held while ringing", n), fmt.Sprintf(`tandem.heldCandidates === %d`, n))
	bob.click("#accept-button")
	alice.assertMedia(tandemMedia)
	bob.assertMedia(tandemMedia)
	if d := value[int](bob, `tandem.dropped.candidates`); d != 0 {
		t.Errorf("bob's page dropped %d of alice's candidates", d)
	}
	types := value[[]string](bob, remoteCandidateTypesJS)
	t.Logf("bob's remote candidates: %v", types)
	if !contains(types, "host") {
		t.Errorf("bob's remote candidates are %v, want alice's host candidates among them", types)
	}
}

// TestChatFlood: the other person in a call sends chat messages as fast as the data channel carries them, some of
// them far larger than a chat message can be. The page shows the latest LIMITS.chatMessages messages, drops the
// oversized ones unread, keeps at most a few notices (the chat panel is closed on this narrower window, so each
// message would raise one), its heap stays small and the call carries on.
func TestChatFlood(t *testing.T) {
	const (
		messages  = 3000
		heapBound = 4 << 20
	)
	srv := startTandem(t)
	bob := openTandem(t, srv, "bob", "", withViewport(1000, 800))
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	mallory, err := webrtctest.NewPeer(ctx, api, srv.wsURL, "mallory", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mallory.Close)
	if err := mallory.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bob.waitIncoming("mallory")
	bob.click("#accept-button")
	if err := mallory.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	bob.waitFor("connected to mallory", `tandem.pc && tandem.pc.connectionState === 'connected' && tandem.call.dc && tandem.call.dc.readyState === 'open'`)
	before := bob.heapAfterGC()

	text := strings.Repeat("blah ", 800) // 4,000 characters, the most a message shows
	huge, _ := json.Marshal(map[string]string{"t": "chat", "text": strings.Repeat("x", 200000)})
	for i := range messages {
		msg, _ := json.Marshal(map[string]string{"t": "chat", "text": fmt.Sprintf("%d %s", i, text)})
		if i%10 == 9 {
			msg = huge
		}
		if err := mallory.SendChat(ctx, string(msg)); err != nil {
			t.Fatalf("sending chat message %d: %v", i, err)
		}
	}
	last, _ := json.Marshal(map[string]string{"t": "chat", "text": "the last one"})
	if err := mallory.SendChat(ctx, string(last)); err != nil {
		t.Fatal(err)
	}
	bob.waitFor("the last message shown", `[...document.querySelectorAll('#chat-log .msg-them .msg-text')].some((e) => e.textContent === 'the last one')`)
	after := bob.heapAfterGC()
	t.Logf("bob's heap after GC: %s before the chat flood, %s after it", before, after)
	if grew := after.total() - before.total(); grew > heapBound {
		t.Errorf("bob's heap grew by %.1f MiB under the chat flood, want at most %d MiB", grew/(1<<20), heapBound>>20)
	}
	if n := value[int](bob, `document.querySelectorAll('#chat-log .msg').length`); n > 200 {
		t.Errorf("bob's chat log holds %d messages, want at most 200", n)
	}
	if n := value[int](bob, `document.querySelectorAll('#toasts .toast').length`); n > 4 {
		t.Errorf("bob's page shows %d notices, want at most 4", n)
	}
	if d := value[int](bob, `tandem.dropped.channelMessages`); d != messages/10 {
		t.Errorf("bob's page dropped %d data-channel messages, want the %d oversized ones", d, messages/10)
	}
	bob.waitFor("the call still up", `tandem.phase === 'active' && tandem.pc.connectionState === 'connected'`)
	bob.screenshot("chat-flood")
}
