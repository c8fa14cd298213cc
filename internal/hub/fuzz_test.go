package hub

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem/protocol"
)

// FuzzHub drives random sequences of what clients and their connections do — logins (names differing in case
// and space), resumes with right and wrong tokens, the echo peer's login, renames, offers, answers, candidates,
// leaves with every reason, users lists, closes, and time passing — across several connections, and after every
// step checks the hub's invariants (checkHub) and that a users list names exactly the users the clients were
// told they are.
func FuzzHub(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*maxFuzzSteps {
			ops = ops[:3*maxFuzzSteps]
		}
		r := newFuzzRun(t)
		for len(ops) > 0 {
			n := min(len(ops), 3)
			r.step(ops[:n])
			ops = ops[n:]
			r.check()
		}
		r.finish()
	})
}

// maxFuzzSteps keeps a run under the message burst (Config.Burst), so that the rate limit, which runs on the
// real clock, never refuses anything and the runs are repeatable.
const maxFuzzSteps = 300

const (
	fuzzSlots     = 6
	fuzzEchoToken = "echo-token"
)

var fuzzNames = []string{"alice", "Alice", "bob", " bob ", "echo", "Echo", "carol", "dave"}

// fuzzConn is a Conn that keeps what it is sent, and whether the hub closed it.
type fuzzConn struct {
	t        *testing.T
	msgs     []map[string]any
	closed   int
	loggedIn int
}

func (c *fuzzConn) LoggedIn() { c.loggedIn++ }

func (c *fuzzConn) Send(msg []byte) bool {
	if !json.Valid(msg) {
		c.t.Fatalf("the hub sent invalid JSON %.200s", msg)
	}
	if c.closed != 0 {
		return false
	}
	if len(msg) < 4<<10 { // the replies the run looks at are small; relayed payloads need not be decoded
		var m map[string]any
		if err := json.Unmarshal(msg, &m); err != nil {
			c.t.Fatalf("the hub sent %s: %v", msg, err)
		}
		c.msgs = append(c.msgs, m)
	}
	return true
}

func (c *fuzzConn) Close(code int, reason string) {
	if c.closed == 0 {
		c.closed = code
	}
}

// fuzzSlot is one client: its connection and what the client was told.
type fuzzSlot struct {
	c      *fuzzConn
	s      *Session
	name   string // the name the client was told it has, "" for none
	logins int    // successful login replies
	// watching: the client asked to watch the list and was told it does; page is the last list it was sent
	// (query, users and more, as JSON), by a reply or a push.
	watching bool
	page     string
}

type fuzzRun struct {
	t       *testing.T
	h       *Hub
	clk     *clock
	slots   [fuzzSlots]*fuzzSlot
	closed  []*Session        // sessions whose connection closed, or that a resume replaced
	tokens  map[string]string // the last resume token seen for each name
	given   map[string]bool   // session ids given to ICEServers
	ended   map[string]int    // session ids ended
	probe   *fuzzSlot         // a client that is never logged in, asking for users lists
	started int               // sessions connected
}

func newFuzzRun(t *testing.T) *fuzzRun {
	r := &fuzzRun{t: t, tokens: map[string]string{}, given: map[string]bool{}, ended: map[string]int{}}
	r.h = New(Config{
		Rate: 200, Burst: 1000, EchoName: "echo", EchoToken: fuzzEchoToken, EchoMaxCalls: 2,
		ICEServers: func(name, host, session string) []protocol.ICEServer {
			if session == "" || r.ended[session] != 0 {
				t.Fatalf("ICEServers for session %q of %s, ended %d times", session, name, r.ended[session])
			}
			r.given[session] = true
			return nil
		},
		SessionEnded: func(session string) {
			if !r.given[session] {
				t.Fatalf("SessionEnded(%q): never given", session)
			}
			if r.ended[session]++; r.ended[session] > 1 {
				t.Fatalf("SessionEnded(%q) twice", session)
			}
		},
	})
	r.clk = fakeClock(r.h)
	r.h.presence().manual = true // check runs the presence rounds itself, between steps
	r.probe = r.connect()
	return r
}

func (r *fuzzRun) connect() *fuzzSlot {
	c := &fuzzConn{t: r.t}
	r.started++
	return &fuzzSlot{c: c, s: r.h.Connect(c, "127.0.0.1")}
}

// step does one thing, chosen by op[0], with op[1:] as its arguments.
func (r *fuzzRun) step(op []byte) {
	arg := func(i int) int {
		if i < len(op) {
			return int(op[i])
		}
		return 0
	}
	i := arg(1) % fuzzSlots
	if r.slots[i] == nil {
		r.slots[i] = r.connect()
	}
	u := r.slots[i]
	target := strings.TrimSpace(fuzzNames[arg(2)%len(fuzzNames)])
	reasons := []string{"", "hangup", "declined", "no_answer", "cancelled"}
	switch arg(0) % 13 {
	case 0, 1: // log in, or rename
		r.login(u, fuzzNames[arg(2)%len(fuzzNames)], "")
	case 2: // resume with the right token (when one was seen) or a wrong one
		token := r.tokens[target]
		if arg(2)&0x80 != 0 || token == "" {
			token = "wrong" + token
		}
		r.login(u, target, token)
	case 3: // the echo peer (or, with the wrong case, an impostor with its token)
		r.login(u, []string{"echo", "Echo"}[arg(2)%2], fuzzEchoToken)
	case 4, 5: // offer, small or large
		size := []int{2, 20 << 10}[arg(2)>>7]
		r.send(u, `{"type":"offer","offer":{"sdp":"`+strings.Repeat("o", size)+`"},"name":"`+target+`"}`)
	case 6:
		r.send(u, `{"type":"answer","answer":{},"name":"`+target+`"}`)
	case 7, 8: // candidate, small or large
		size := []int{2, 20 << 10}[arg(2)>>7]
		r.send(u, `{"type":"candidate","candidate":{"candidate":"`+strings.Repeat("c", size)+`"},"name":"`+target+`"}`)
	case 9: // leave, to a name (bit 0x40) or to the peer, with a reason (bits 0x38) or none
		reason := reasons[(arg(2)>>3&7)%len(reasons)]
		msg := `{"type":"leave"`
		if arg(2)&0x40 != 0 {
			msg += `,"name":"` + target + `"`
		}
		if reason != "" {
			msg += `,"reason":"` + reason + `"`
		}
		r.send(u, msg+"}")
	case 10: // the connection closes
		r.close(i)
	case 11: // time passes: up to about a minute
		r.clk.advance(time.Duration(arg(2)+1) * 250 * time.Millisecond)
	case 12: // a users list, one-off, watched (bit 0x80), or ending a watch (bit 0x40); 2 or 50 at most (0x20)
		watch := map[int]string{0x80: `,"watch":true`, 0x40: `,"watch":false`, 0xc0: `,"watch":true`}[arg(2)&0xc0]
		limit := []string{"50", "2"}[arg(2)>>5&1]
		r.send(u, `{"type":"users","query":"`+target[:arg(2)%len(target)]+`","limit":`+limit+watch+`}`)
	}
	// Connections the hub closed (replaced by a resume) close, as their transport closes them.
	for j, v := range r.slots {
		if v != nil && v.c.closed != 0 {
			r.close(j)
		}
	}
}

func (r *fuzzRun) send(u *fuzzSlot, msg string) {
	u.s.OnText([]byte(msg))
	r.notePages()
	for _, m := range u.c.msgs {
		if m["type"] == "login" {
			r.t.Fatalf("a login reply to %s: %v", msg, m)
		}
		if m["type"] == "error" && (m["code"] == "internal" || m["code"] == "invalid_message" || m["code"] == "invalid_json") {
			r.t.Fatalf("%s: %v", msg, m)
		}
	}
	r.forget()
}

// forget drops what the clients were sent.
func (r *fuzzRun) forget() {
	for _, v := range r.slots {
		if v != nil {
			v.c.msgs = nil
		}
	}
}

func (r *fuzzRun) login(u *fuzzSlot, name, token string) {
	msg, _ := json.Marshal(map[string]string{"type": "login", "name": name, "token": token})
	u.s.OnText(msg)
	var reply map[string]any
	for _, m := range u.c.msgs {
		if m["type"] == "login" {
			if reply != nil {
				r.t.Fatalf("two login replies: %v", u.c.msgs)
			}
			reply = m
		}
	}
	r.forget()
	if reply == nil {
		r.t.Fatalf("no login reply to %s", msg)
	}
	if reply["success"] != true {
		return
	}
	got := reply["name"].(string)
	if got != strings.TrimSpace(name) {
		r.t.Fatalf("logged in as %q, asked for %q", got, name)
	}
	if strings.EqualFold(got, "echo") && u.name != got && (got != "echo" || token != fuzzEchoToken && token != r.tokens[got]) {
		r.t.Fatalf("logged in as %q with token %q", got, token)
	}
	u.name, r.tokens[got] = got, reply["token"].(string)
	u.logins++
	// A resume took the name from whichever client had it.
	for _, v := range r.slots {
		if v != nil && v != u && v.name == got {
			v.name = ""
		}
	}
}

// notePages records the lists the clients were sent: a watch's reply, and pushes, which only watchers get.
func (r *fuzzRun) notePages() {
	for _, v := range r.slots {
		if v == nil {
			continue
		}
		for _, m := range v.c.msgs {
			if m["type"] != "users" {
				continue
			}
			if m["update"] == true && !v.watching {
				r.t.Fatalf("a client that does not watch was pushed %v", m)
			}
			if m["update"] == true || m["watching"] == true {
				v.watching = true
				b, _ := json.Marshal([]any{m["query"], m["users"], m["more"]})
				v.page = string(b)
			} else if m["update"] == nil {
				// A reply without "watching": to a one-off request the watch goes on; to one with watch (true,
				// refused, or false) it does not. The session says which.
				v.watching = v.s.watch != nil
			}
		}
	}
}

func (r *fuzzRun) close(i int) {
	u := r.slots[i]
	u.s.OnClose()
	r.closed = append(r.closed, u.s)
	r.slots[i] = nil
}

// check verifies the hub's invariants after a step.
func (r *fuzzRun) check() {
	t, h := r.t, r.h
	// What the clients were told agrees with the users list.
	var want []string
	for _, u := range r.slots {
		if u != nil && u.name != "" {
			want = append(want, u.name)
		}
		if u != nil && u.c.loggedIn != u.logins {
			t.Fatalf("LoggedIn called %d times for %d successful logins", u.c.loggedIn, u.logins)
		}
	}
	slices.SortFunc(want, func(a, b string) int {
		if c := strings.Compare(fold(a), fold(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	r.probe.s.OnText([]byte(`{"type":"users","limit":100}`))
	var listed []string
	for _, x := range r.probe.c.msgs[0]["users"].([]any) {
		listed = append(listed, x.(map[string]any)["name"].(string))
	}
	total := int(r.probe.c.msgs[0]["total"].(float64))
	r.probe.c.msgs = nil
	if !slices.Equal(listed, want) || total != len(want) {
		t.Fatalf("users lists %q (total %d); the clients were told %q", listed, total, want)
	}

	// A presence round: afterwards every watcher has the page its query lists now.
	h.presenceRound()
	r.notePages()
	r.forget()
	h.mu.Lock()
	for _, u := range r.slots {
		if u == nil || u.s.watch == nil {
			if u != nil && u.watching {
				t.Fatalf("the client was told it watches, the hub has no watch for it")
			}
			continue
		}
		q := u.s.watch.q
		list, more := h.listLocked(q.prefix, q.key.limit)
		users := make([]any, 0, len(list))
		for _, e := range list {
			m := map[string]any{"name": e.Name, "busy": e.Busy}
			if e.Echo {
				m["echo"] = true
			}
			users = append(users, m)
		}
		b, _ := json.Marshal([]any{q.key.query, users, more})
		if u.page != string(b) {
			h.mu.Unlock()
			t.Fatalf("after a round, a watcher of %q has the page %s; the list is %s", q.key.query, u.page, b)
		}
	}
	if err := presenceError(h); err != nil {
		h.mu.Unlock()
		t.Fatal(err)
	}
	h.mu.Unlock()

	h.mu.Lock()
	defer h.mu.Unlock()
	if err := checkHub(h); err != nil {
		t.Fatal(err)
	}
	live := map[*Session]bool{}
	for _, s := range h.users {
		live[s] = true
	}
	for _, s := range r.closed {
		if live[s] || s.name != "" || s.peer != nil || len(s.callers) != 0 || s.sid != "" || s.strangers != nil || !s.gone ||
			s.watch != nil {
			t.Fatalf("a closed session keeps state: name %q, peer %v, %d callers, sid %q, %d strangers, gone %v",
				s.name, s.peer != nil, len(s.callers), s.sid, len(s.strangers), s.gone)
		}
	}
	// Every login's session id is given, and those of logins that ended are ended: exactly.
	for id := range r.given {
		open := false
		for _, s := range h.users {
			open = open || s.sid == id
		}
		if open == (r.ended[id] != 0) {
			t.Fatalf("session %s: held by a user %v, ended %d times", id, open, r.ended[id])
		}
	}
}

// checkHub returns what is wrong with h's state, if anything: the index and the user map disagree, a call is
// not symmetric, an echo call has no record at the echo user, a user is beyond the echo user's limit, a user
// has too many strangers records.
func checkHub(h *Hub) error {
	if err := indexError(h); err != nil {
		return err
	}
	for name, s := range h.users {
		switch {
		case s.name != name || s.gone || s.sid == "":
			return fmt.Errorf("user %q: session named %q, gone %v, session id %q", name, s.name, s.gone, s.sid)
		case len(s.strangers) > maxStrangers:
			return fmt.Errorf("%s keeps %d strangers", name, len(s.strangers))
		case s.unanswered && s.peer == nil:
			return fmt.Errorf("%s has an unanswered call with nobody", name)
		case len(s.callers) > 0 && !h.isEchoLocked(s):
			return fmt.Errorf("%s is not the echo user but has callers", name)
		case len(s.callers) > h.cfg.EchoMaxCalls:
			return fmt.Errorf("the echo user is in %d calls", len(s.callers))
		}
		if p := s.peer; p != nil {
			if h.users[p.name] != p {
				return fmt.Errorf("%s's peer %q is not online", name, p.name)
			}
			if h.isEchoLocked(p) {
				if _, ok := p.callers[s]; !ok {
					return fmt.Errorf("%s calls the echo user, which does not know", name)
				}
			} else if p.peer != s {
				return fmt.Errorf("%s's peer is %s, whose peer is another", name, p.name)
			}
			if s.unanswered && p.unanswered {
				return fmt.Errorf("%s and %s both wait for the other's answer", name, p.name)
			}
		}
		for c := range s.callers {
			if h.users[c.name] != c || c.peer != s {
				return fmt.Errorf("the echo user's caller %q is not in a call with it", c.name)
			}
		}
	}
	return nil
}

// finish shuts the hub down and closes every connection: nothing may be left.
func (r *fuzzRun) finish() {
	r.h.Shutdown()
	for id := range r.given {
		if r.ended[id] != 1 {
			r.t.Fatalf("session %s ended %d times by the shutdown", id, r.ended[id])
		}
	}
	for i, u := range r.slots {
		if u != nil {
			r.close(i)
		}
	}
	r.check()
	r.probe.s.OnClose()
	if r.h.Online() != 0 || r.h.index.Len() != 0 {
		r.t.Fatalf("%d online, %d indexed after every connection closed", r.h.Online(), r.h.index.Len())
	}
	for id := range r.given {
		if r.ended[id] != 1 {
			r.t.Fatalf("session %s ended %d times", id, r.ended[id])
		}
	}
}

// fuzzSeeds are scenarios to start from, in FuzzHub's encoding: three bytes a step (what, which connection,
// argument).
func fuzzSeeds() [][]byte {
	const (
		login, resume, echoLogin, offer, answer, candidate, leave, closeConn, wait, users = 0, 2, 3, 4, 6, 7, 9, 10, 11, 12
		alice, bob, echo, carol                                                           = 0, 2, 4, 6
		withName                                                                          = 0x40
		large                                                                             = 0x80
		declined, noAnswer, cancelled                                                     = 2 << 3, 3 << 3, 4 << 3
	)
	return [][]byte{
		// Resume while the old connection is open, twice; then everyone lists and leaves.
		{login, 0, alice, login, 1, bob, resume, 2, alice, resume, 3, alice, users, 4, 0, closeConn, 3, 0},
		// A call, answered, candidates both ways, a renegotiation, hang up.
		{login, 0, alice, login, 1, bob, offer, 0, bob, answer, 1, alice, candidate, 0, bob, candidate, 1, alice,
			offer, 0, bob, leave, 1, withName | alice},
		// A stranger rings and floods; the callee declines; the stranger rings again, waits, rings again.
		{login, 0, alice, login, 1, bob, offer, 0, bob | large, candidate, 0, bob | large, candidate, 0, bob | large,
			leave, 1, declined, offer, 0, bob, wait, 0, 200, wait, 0, 200, offer, 0, bob},
		// The echo peer, callers beyond its limit, a resume of the echo peer, an impostor.
		{echoLogin, 0, 0, login, 1, alice, login, 2, bob, login, 3, carol, offer, 1, echo, offer, 2, echo, offer, 3,
			echo, echoLogin, 4, 0, answer, 4, alice, login, 5, echo, echoLogin, 5, 1, closeConn, 4, 0, offer, 3, echo},
		// Renames in and out of calls, a resume from a logged-in connection, cancel and no_answer.
		{login, 0, alice, login, 1, bob, offer, 0, bob, login, 0, carol, offer, 1, carol, leave, 1, cancelled,
			offer, 1, carol, leave, 1, withName | noAnswer, login, 2, 7, resume, 2, bob, offer, 0, bob},
	}
}

// presenceError returns what is wrong with h's watched lists, if anything: a watch that its session does not
// have, a count of watchers that is off, a query that is not where the change marking looks for it.
func presenceError(h *Hub) error {
	p := h.pr
	if p == nil {
		return nil
	}
	n := 0
	for k, q := range p.queries {
		if q.key != k || len(q.watchers) == 0 {
			return fmt.Errorf("query %+v: key %+v, %d watchers", k, q.key, len(q.watchers))
		}
		if !slices.Contains(p.byPrefix[q.prefix], q) {
			return fmt.Errorf("query %+v is not under its prefix %q", k, q.prefix)
		}
		for s, w := range q.watchers {
			if s.watch != w || w.q != q || s.gone {
				return fmt.Errorf("a watcher of %+v: its session watches %v, gone %v", k, s.watch != nil, s.gone)
			}
			n++
		}
	}
	for prefix, qs := range p.byPrefix {
		for _, q := range qs {
			if p.queries[q.key] != q || q.prefix != prefix {
				return fmt.Errorf("prefix %q lists a query %+v the hub does not have", prefix, q.key)
			}
		}
	}
	if n != p.watchers {
		return fmt.Errorf("%d watchers counted, %d watching", p.watchers, n)
	}
	return nil
}
