package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"tandem/client"
	"tandem/internal/rfc6455"
	"tandem/protocol"
)

// The episodes of the churn scenario. Each returns an error for the first answer of the server it did not expect;
// the connections it opened are closed after it by churner.run, whatever happened.

// relayedPayload wants a relayed message whose payload came through byte for byte.
func relayedPayload(typ, from string, payload json.RawMessage) want {
	return want{typ + " from " + from, func(m *client.Message) bool {
		if m.Type != typ || m.Name != from {
			return false
		}
		switch typ {
		case protocol.TypeOffer:
			return bytes.Equal(m.Offer, payload)
		case protocol.TypeAnswer:
			return bytes.Equal(m.Answer, payload)
		case protocol.TypeCandidate:
			if payload == nil {
				return string(m.Candidate) == "null"
			}
			return bytes.Equal(m.Candidate, payload)
		}
		return true
	}}
}

// listedBusy wants a users reply listing name once, busy or not.
func listedBusy(name string, busy bool) want {
	return want{fmt.Sprintf("users with %s listed once, busy %v", name, busy), func(m *client.Message) bool {
		if !listed(name, 1).match(m) {
			return false
		}
		for _, u := range m.Users {
			if u.Name == name {
				return u.Busy == busy
			}
		}
		return false
	}}
}

// epLogin: log in, list everybody, find yourself, and go.
func (e *episode) epLogin() error {
	n := e.name()
	c, r, err := e.connect(n)
	if err != nil {
		return err
	}
	if r.Peer != "" {
		return fmt.Errorf("a new login of %s has peer %q", n, r.Peer)
	}
	if err := c.SendUsers(e.ctx, "", 20); err != nil {
		return err
	}
	if err := e.expect(c, n, want{"users (everybody, at most 20)", func(m *client.Message) bool {
		return m.Type == protocol.TypeUsers && m.Total >= 1 && len(m.Users) >= 1 && len(m.Users) <= 20
	}}); err != nil {
		return err
	}
	if err := e.search(c, n, n, 1); err != nil {
		return err
	}
	closeWith(c, rand.IntN(closeWays))
	return nil
}

// epRename: log in, log in again under another name (the old one must be free at once), maybe back again.
func (e *episode) epRename() error {
	a, b := e.name(), e.name()
	c, r1, err := e.connect(a)
	if err != nil {
		return err
	}
	r2, err := e.loginAs(c, b, "")
	if err != nil {
		return err
	}
	if r2.Token == r1.Token {
		return fmt.Errorf("renamed from %s to %s with the same token", a, b)
	}
	if err := e.search(c, b, a, 0); err != nil {
		return err
	}
	if err := e.search(c, b, b, 1); err != nil {
		return err
	}
	if rand.IntN(2) == 0 { // and back: a was freed
		if _, err := e.loginAs(c, a, ""); err != nil {
			return err
		}
		if err := e.search(c, a, b, 0); err != nil {
			return err
		}
		if err := e.search(c, a, a, 1); err != nil {
			return err
		}
	}
	closeWith(c, rand.IntN(closeWays))
	return nil
}

// epResumeOpen: a second connection takes a name over with its resume token while the first is still open (a
// network blip); the first is closed with "replaced", a call in progress goes on.
func (e *episode) epResumeOpen() error {
	an := e.name()
	c1, r1, err := e.connect(an)
	if err != nil {
		return err
	}
	var b *client.Client
	var bn string
	inCall := rand.IntN(2) == 0
	if inCall {
		bn = e.name()
		if b, _, err = e.connect(bn); err != nil {
			return err
		}
		if err := e.call(c1, b, an, bn); err != nil {
			return err
		}
	}
	c2, err := e.dial()
	if err != nil {
		return err
	}
	r2, err := e.loginAs(c2, an, r1.Token)
	if err != nil {
		return err
	}
	if r2.Token != r1.Token || r2.Peer != bn {
		return fmt.Errorf("resumed %s with token %q and peer %q, want the same token and peer %q", an, r2.Token, r2.Peer, bn)
	}
	if err := e.expectClosed(c1, an+"'s old connection", client.ErrReplaced); err != nil {
		return err
	}
	pl := &e.ch.g.pl
	if inCall {
		if err := c2.SendCandidate(e.ctx, bn, pl.candidate); err != nil {
			return err
		}
		if err := e.expect(b, bn, relayedPayload(protocol.TypeCandidate, an, pl.candidate)); err != nil {
			return err
		}
		if err := b.SendCandidate(e.ctx, an, pl.candidate); err != nil {
			return err
		}
		if err := e.expect(c2, an, relayedPayload(protocol.TypeCandidate, bn, pl.candidate)); err != nil {
			return err
		}
		if err := c2.SendLeave(e.ctx, bn, protocol.ReasonHangup); err != nil {
			return err
		}
		if err := e.expect(b, bn, leaveFrom(an, protocol.ReasonHangup)); err != nil {
			return err
		}
		closeWith(b, rand.IntN(closeWays))
	}
	if err := e.search(c2, an, an, 1); err != nil {
		return err
	}
	closeWith(c2, rand.IntN(closeWays))
	return nil
}

// epResumeClosed: the first connection is closed (normally, dropped or reset) and a new one logs in with the
// token at once: whether or not the server has noticed the close yet, the login succeeds and the name is listed
// once.
func (e *episode) epResumeClosed() error {
	an := e.name()
	c1, r1, err := e.connect(an)
	if err != nil {
		return err
	}
	closeWith(c1, rand.IntN(closeWays))
	c2, err := e.dial()
	if err != nil {
		return err
	}
	if _, err := e.loginAs(c2, an, r1.Token); err != nil {
		return err
	}
	if err := e.search(c2, an, an, 1); err != nil {
		return err
	}
	closeWith(c2, rand.IntN(closeWays))
	return nil
}

// epCall: a call set up, its candidates both ways, maybe a renegotiation, and a hang-up by either side.
func (e *episode) epCall() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	pl := &e.ch.g.pl
	if err := e.search(b, bn, an, 1); err != nil {
		return err
	}
	for i := range 2 + rand.IntN(7) {
		from, to, fn, tn := a, b, an, bn
		if i%2 == 1 {
			from, to, fn, tn = b, a, bn, an
		}
		if err := from.SendCandidate(e.ctx, tn, pl.candidate); err != nil {
			return err
		}
		if err := e.expect(to, tn, relayedPayload(protocol.TypeCandidate, fn, pl.candidate)); err != nil {
			return err
		}
	}
	if err := a.SendCandidate(e.ctx, bn, nil); err != nil { // end of candidates
		return err
	}
	if err := e.expect(b, bn, relayedPayload(protocol.TypeCandidate, an, nil)); err != nil {
		return err
	}
	if rand.IntN(3) == 0 { // a renegotiation: relayed, and no ringing
		if err := a.SendOffer(e.ctx, bn, pl.offer); err != nil {
			return err
		}
		if err := e.expect(b, bn, relayedPayload(protocol.TypeOffer, an, pl.offer)); err != nil {
			return err
		}
		if err := b.SendAnswer(e.ctx, an, pl.answer); err != nil {
			return err
		}
		if err := e.expect(a, an, relayedPayload(protocol.TypeAnswer, bn, pl.answer)); err != nil {
			return err
		}
	}
	if err := e.search(a, an, bn, 1); err != nil {
		return err
	}
	from, to, fn, tn := a, b, an, bn
	if rand.IntN(2) == 0 {
		from, to, fn, tn = b, a, bn, an
	}
	reason, name := []string{"", protocol.ReasonHangup}[rand.IntN(2)], []string{"", tn}[rand.IntN(2)]
	if err := from.SendLeave(e.ctx, name, reason); err != nil {
		return err
	}
	if err := e.expect(to, tn, leaveFrom(fn, protocol.ReasonHangup)); err != nil {
		return err
	}
	if err := to.SendUsers(e.ctx, fn, 100); err != nil {
		return err
	}
	if err := e.expect(to, tn, listedBusy(fn, false)); err != nil { // the call ended before the leave was relayed
		return err
	}
	if rand.IntN(3) == 0 { // a call that was answered can be made again at once (no cooldown); this one is cancelled
		if err := e.ring(a, b, an, bn); err != nil {
			return fmt.Errorf("calling again after a hang-up: %w", err)
		}
		if err := a.SendLeave(e.ctx, bn, protocol.ReasonCancelled); err != nil {
			return err
		}
		if err := e.expect(b, bn, leaveFrom(an, protocol.ReasonCancelled)); err != nil {
			return err
		}
	}
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// ring: a offers to b, b gets the offer, a gets ringing.
func (e *episode) ring(a, b *client.Client, an, bn string) error {
	pl := &e.ch.g.pl
	if err := a.SendOffer(e.ctx, bn, pl.offer); err != nil {
		return err
	}
	if err := e.expect(b, bn, relayedPayload(protocol.TypeOffer, an, pl.offer)); err != nil {
		return err
	}
	return e.expect(a, an, relayed(protocol.TypeRinging, bn))
}

// epDecline: the callee declines. The caller cannot ring it again at once (cooldown), and the callee hears
// nothing of it; anyone else can call the callee at once.
func (e *episode) epDecline() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.ring(a, b, an, bn); err != nil {
		return err
	}
	if err := b.SendLeave(e.ctx, an, protocol.ReasonDeclined); err != nil {
		return err
	}
	if err := e.expect(a, an, leaveFrom(bn, protocol.ReasonDeclined)); err != nil {
		return err
	}
	if err := e.search(a, an, bn, 1); err != nil {
		return err
	}
	if err := e.ringRefused(a, b, an, bn); err != nil {
		return err
	}
	if rand.IntN(3) == 0 { // somebody else rings at once, and gives up
		cn := e.name()
		c, _, err := e.connect(cn)
		if err != nil {
			return err
		}
		if err := e.ring(c, b, cn, bn); err != nil {
			return err
		}
		if err := c.SendLeave(e.ctx, bn, protocol.ReasonCancelled); err != nil {
			return err
		}
		if err := e.expect(b, bn, leaveFrom(cn, protocol.ReasonCancelled)); err != nil {
			return err
		}
		closeWith(c, rand.IntN(closeWays))
	}
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// cooldownFor wants the refusal of an offer to name with cooldown, and how long to wait.
func cooldownFor(name string) want {
	return want{"error cooldown (offer to " + name + ", with retryAfter)", func(m *client.Message) bool {
		return m.Type == protocol.TypeError && m.Code == protocol.CodeCooldown && m.Request == protocol.TypeOffer &&
			m.Name == name && m.RetryAfter >= 1
	}}
}

// ringRefused: a rings b again right after a call that b declined or that rang unanswered: the offer is refused
// with cooldown, and b gets nothing (the next message it reads is the answer to a request of its own).
func (e *episode) ringRefused(a, b *client.Client, an, bn string) error {
	if err := a.SendOffer(e.ctx, bn, e.ch.g.pl.offer); err != nil {
		return err
	}
	if err := e.expect(a, an, cooldownFor(bn)); err != nil {
		return fmt.Errorf("ringing again at once: %w", err)
	}
	return e.search(b, bn, an, 1)
}

// epNoAnswer: the call rings unanswered, and one side gives up (the caller, or the callee's ring timing out);
// the caller cannot ring again at once.
func (e *episode) epNoAnswer() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.ring(a, b, an, bn); err != nil {
		return err
	}
	from, to, fn, tn := a, b, an, bn
	if rand.IntN(2) == 0 {
		from, to, fn, tn = b, a, bn, an
	}
	if err := from.SendLeave(e.ctx, tn, protocol.ReasonNoAnswer); err != nil {
		return err
	}
	if err := e.expect(to, tn, leaveFrom(fn, protocol.ReasonNoAnswer)); err != nil {
		return err
	}
	if err := e.ringRefused(a, b, an, bn); err != nil {
		return err
	}
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// epCancel: the caller hangs up at once, before reading anything.
func (e *episode) epCancel() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	pl := &e.ch.g.pl
	if err := a.SendOffer(e.ctx, bn, pl.offer); err != nil {
		return err
	}
	if err := a.SendLeave(e.ctx, bn, protocol.ReasonCancelled); err != nil {
		return err
	}
	if err := e.expect(a, an, relayed(protocol.TypeRinging, bn)); err != nil {
		return err
	}
	if err := e.expect(b, bn, relayedPayload(protocol.TypeOffer, an, pl.offer), leaveFrom(an, protocol.ReasonCancelled)); err != nil {
		return err
	}
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// epBusy: a third user calls one who is in a call (busy), sends what only peers may send (not in call), and
// calls again once the call is over.
func (e *episode) epBusy() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	cn := e.name()
	c, _, err := e.connect(cn)
	if err != nil {
		return err
	}
	pl := &e.ch.g.pl
	if err := c.SendOffer(e.ctx, bn, pl.offer); err != nil {
		return err
	}
	if err := e.expect(c, cn, errorCode(protocol.CodeBusy)); err != nil {
		return err
	}
	if err := c.SendAnswer(e.ctx, an, pl.answer); err != nil {
		return err
	}
	if err := c.SendLeave(e.ctx, bn, ""); err != nil {
		return err
	}
	if err := e.expect(c, cn, errorCode(protocol.CodeNotInCall), errorCode(protocol.CodeNotInCall)); err != nil {
		return err
	}
	if err := a.SendLeave(e.ctx, bn, protocol.ReasonHangup); err != nil {
		return err
	}
	if err := e.expect(b, bn, leaveFrom(an, protocol.ReasonHangup)); err != nil {
		return err
	}
	if err := e.ring(c, b, cn, bn); err != nil {
		return err
	}
	if err := b.SendLeave(e.ctx, "", protocol.ReasonDeclined); err != nil {
		return err
	}
	if err := e.expect(c, cn, leaveFrom(bn, protocol.ReasonDeclined)); err != nil {
		return err
	}
	for _, x := range []*client.Client{a, b, c} {
		closeWith(x, rand.IntN(closeWays))
	}
	return nil
}

// epDropInCall: one side of a call (or of a ringing offer) goes away without a leave (closed, dropped or reset);
// the other gets leave "disconnected", and the name is free.
func (e *episode) epDropInCall() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if rand.IntN(3) == 0 {
		err = e.ring(a, b, an, bn)
	} else {
		err = e.call(a, b, an, bn)
	}
	if err != nil {
		return err
	}
	if rand.IntN(2) == 0 {
		a, b, an, bn = b, a, bn, an
	}
	way := rand.IntN(closeWays)
	closeWith(a, way)
	if err := e.expect(b, bn, leaveFrom(an, protocol.ReasonDisconnected)); err != nil {
		return fmt.Errorf("%s %s: %w", an, closeWayNames[way], err)
	}
	if err := e.freed(b, bn, an, nil); err != nil {
		return err
	}
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// burst sends n candidates from c to the user to, in a call to has accepted (the trickle of a browser with many
// interfaces and a TURN server), and stops at the first error. A browser sends no offers in a burst: the server
// takes 5 renegotiation offers in a row and then one every 2 s (epOfferFlood checks that).
func (e *episode) burst(c *client.Client, to string, n int) error {
	pl := &e.ch.g.pl
	for range n {
		if err := c.SendCandidate(e.ctx, to, pl.candidate); err != nil {
			return err
		}
	}
	return nil
}

// isRelayFrom matches candidates from name: the messages of a burst.
func isRelayFrom(name string) func(*client.Message) bool {
	return func(m *client.Message) bool { return m.Type == protocol.TypeCandidate && m.Name == name }
}

// epResetBurstOut: in a call, a sends a burst of candidates (up to 300, about 78 kB: more than the server reads
// at once) and is dropped or reset in the middle of it; b gets what came through, then leave "disconnected".
func (e *episode) epResetBurstOut() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	n := 20 + rand.IntN(280)
	if err := e.burst(a, bn, rand.IntN(n)+1); err != nil {
		return err
	}
	way := closeReset
	if rand.IntN(3) == 0 {
		way = closeAbrupt
	}
	closeWith(a, way)
	if err := e.expectSkipping(b, bn, isRelayFrom(an), leaveFrom(an, protocol.ReasonDisconnected)); err != nil {
		return fmt.Errorf("%s %s during a burst: %w", an, closeWayNames[way], err)
	}
	if err := e.freed(b, bn, an, nil); err != nil {
		return err
	}
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// epResetBurstIn: in a call, b sends a burst of candidates to a, which reads a little of it (or nothing) and is
// reset or dropped while the server is still writing to it; b gets leave "disconnected" (and errors for what it
// sent after a was gone).
func (e *episode) epResetBurstIn() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	n := 20 + rand.IntN(280)
	if err := e.burst(b, an, n); err != nil {
		return err
	}
	for range rand.IntN(n / 2) {
		if _, err := a.ReadRaw(e.ctx); err != nil {
			return fmt.Errorf("%s reading the burst: %w", an, err)
		}
	}
	way := closeReset
	if rand.IntN(3) == 0 {
		way = closeAbrupt
	}
	closeWith(a, way)
	afterGone := func(m *client.Message) bool {
		return m.Type == protocol.TypeError && (m.Code == protocol.CodeNotOnline || m.Code == protocol.CodeNotInCall)
	}
	if err := e.expectSkipping(b, bn, afterGone, leaveFrom(an, protocol.ReasonDisconnected)); err != nil {
		return fmt.Errorf("%s %s while receiving a burst: %w", an, closeWayNames[way], err)
	}
	if err := e.freed(b, bn, an, afterGone); err != nil {
		return err
	}
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// rawLogin logs a raw connection in as name and checks the reply.
func (e *episode) rawLogin(r *rawConn, name string) error {
	if err := r.send(rfc6455.OpText, []byte(`{"type":"login","name":"`+name+`"}`)); err != nil {
		return err
	}
	return e.rawExpect(r, name, func(m *client.Message) bool { return m.Type == protocol.TypeLogin && m.Success && m.Name == name })
}

// rawExpect reads the next message of a raw connection and checks it.
func (e *episode) rawExpect(r *rawConn, who string, ok func(*client.Message) bool) error {
	op, payload, err := r.read()
	if err != nil {
		return fmt.Errorf("%s reading: %w", who, err)
	}
	var m client.Message
	if op != rfc6455.OpText || client.Decode(payload, &m) != nil || !ok(&m) {
		return fmt.Errorf("%s got an unexpected frame (opcode %d): %.200q", who, op, payload)
	}
	return nil
}

// epMidFrame: a connection (logged in or not) sends a few frames, maybe a binary one (refused), then a frame cut
// off anywhere (in its header or its payload), and is reset or dropped; the name is free at once.
func (e *episode) epMidFrame() error {
	r, err := e.dialRaw()
	if err != nil {
		return err
	}
	if err := r.upgrade(); err != nil {
		return err
	}
	n := ""
	if rand.IntN(3) > 0 {
		n = e.name()
		if err := e.rawLogin(r, n); err != nil {
			return err
		}
	}
	if rand.IntN(2) == 0 {
		if err := r.send(rfc6455.OpBinary, []byte{1, 2, 3}); err != nil {
			return err
		}
		if err := e.rawExpect(r, "raw connection", func(m *client.Message) bool {
			return m.Type == protocol.TypeError && m.Code == protocol.CodeBinaryNotSupported
		}); err != nil {
			return err
		}
	}
	pl := &e.ch.g.pl
	msg := []byte(`{"type":"offer","name":"nobody","offer":` + string(pl.offer) + `}`)
	if rand.IntN(2) == 0 {
		msg = bytes.Repeat(msg, 30) // about 80 kB claimed: more than the server reads at once
	}
	f := frame(rfc6455.OpText, msg, len(msg))
	if _, err := r.nc.Write(f[:1+rand.IntN(len(f)-1)]); err != nil {
		return err
	}
	way := closeReset
	if rand.IntN(3) == 0 {
		way = closeAbrupt
	}
	if way == closeReset {
		r.reset()
	} else {
		_ = r.nc.Close()
	}
	if n == "" {
		return nil
	}
	on := e.name()
	obs, _, err := e.connect(on)
	if err != nil {
		return err
	}
	if err := e.freed(obs, on, n, nil); err != nil {
		return fmt.Errorf("%s %s in the middle of a frame: %w", n, closeWayNames[way], err)
	}
	closeWith(obs, rand.IntN(closeWays))
	return nil
}

// epNoLogin: connections that never log in: silent, cut off in their handshake, upgraded and idle, or upgraded
// and sending what needs a login (refused with not_logged_in).
func (e *episode) epNoLogin() error {
	end := func(r *rawConn) {
		if rand.IntN(2) == 0 {
			r.reset()
		} else {
			_ = r.nc.Close()
		}
	}
	switch rand.IntN(4) {
	case 0: // connects and says nothing
		r, err := e.dialRaw()
		if err != nil {
			return err
		}
		sleepCtx(e.ctx, time.Duration(rand.IntN(300))*time.Millisecond) // a stranger's silence, on purpose
		end(r)
	case 1: // half a handshake
		r, err := e.dialRaw()
		if err != nil {
			return err
		}
		req := r.handshakeRequest("dGhlIHNhbXBsZSBub25jZQ==")
		if _, err := r.nc.Write([]byte(req[:1+rand.IntN(len(req)-2)])); err != nil {
			return err
		}
		end(r)
	case 2: // upgraded, a ping, then gone
		r, err := e.dialRaw()
		if err != nil {
			return err
		}
		if err := r.upgrade(); err != nil {
			return err
		}
		if err := r.send(rfc6455.OpPing, []byte("churn")); err != nil {
			return err
		}
		op, payload, err := r.read()
		if err != nil || op != rfc6455.OpPong || string(payload) != "churn" {
			return fmt.Errorf("ping answered with opcode %d %q (%v), want a pong", op, payload, err)
		}
		end(r)
	default:
		c, err := e.dial()
		if err != nil {
			return err
		}
		pl := &e.ch.g.pl
		nobody := e.name()
		if err := c.SendUsers(e.ctx, "", 5); err != nil {
			return err
		}
		if err := e.expect(c, "a connection not logged in", want{"users", func(m *client.Message) bool {
			return m.Type == protocol.TypeUsers && len(m.Users) <= 5
		}}); err != nil {
			return err
		}
		for _, send := range []func() error{
			func() error { return c.SendOffer(e.ctx, nobody, pl.offer) },
			func() error { return c.SendCandidate(e.ctx, nobody, pl.candidate) },
			func() error { return c.SendLeave(e.ctx, "", "") },
		} {
			if err := send(); err != nil {
				return err
			}
			if err := e.expect(c, "a connection not logged in", errorCode(protocol.CodeNotLoggedIn)); err != nil {
				return err
			}
		}
		closeWith(c, rand.IntN(closeWays))
	}
	return nil
}

// epRefused: messages the server must refuse with the right code, leaving the connection as it was.
func (e *episode) epRefused() error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	n := e.name()
	loggedIn := rand.IntN(3) > 0
	echo := ""
	if loggedIn {
		r, err := e.loginAs(c, n, "")
		if err != nil {
			return err
		}
		echo = r.Echo
	}
	nobody := e.name()
	type probe struct {
		msg  string
		want want
	}
	probes := []probe{
		{`{"type":"dance"}`, errorCode(protocol.CodeUnknownType)},
		{`{"type":`, errorCode(protocol.CodeInvalidJSON)},
		{`{"type":"offer","name":"x",}`, errorCode(protocol.CodeInvalidJSON)},
		{`[1,2]`, errorCode(protocol.CodeInvalidMessage)},
		{`"hello"`, errorCode(protocol.CodeInvalidMessage)},
		{`{"type":7}`, errorCode(protocol.CodeInvalidMessage)},
		{`{"name":"x"}`, errorCode(protocol.CodeInvalidMessage)},
		{`{"type":"login","name":""}`, loginRefused(protocol.CodeInvalidName)},
		{`{"type":"login"}`, loginRefused(protocol.CodeInvalidName)},
		{`{"type":"login","name":"a\tb"}`, loginRefused(protocol.CodeInvalidName)},
		{`{"type":"login","name":"` + strings.Repeat("n", 65) + `"}`, loginRefused(protocol.CodeInvalidName)},
	}
	if loggedIn {
		probes = append(probes,
			probe{`{"type":"offer","name":"` + nobody + `","offer":{}}`, errorCode(protocol.CodeNotOnline)},
			probe{`{"type":"offer","name":"` + n + `","offer":{}}`, errorCode(protocol.CodeSelfCall)},
			probe{`{"type":"offer","name":"` + nobody + `"}`, errorCode(protocol.CodeInvalidMessage)},
			probe{`{"type":"candidate","name":"` + nobody + `","candidate":null}`, errorCode(protocol.CodeNotOnline)},
			probe{`{"type":"answer","name":"` + n + `","answer":{}}`, errorCode(protocol.CodeNotInCall)},
			probe{`{"type":"leave"}`, errorCode(protocol.CodeNotInCall)},
			probe{`{"type":"leave","name":"` + nobody + `"}`, errorCode(protocol.CodeNotOnline)},
			probe{`{"type":"leave","reason":"bored"}`, errorCode(protocol.CodeInvalidMessage)},
		)
		if echo != "" { // the echo test user's name is reserved, in any case, while it is online as well
			for _, name := range []string{echo, strings.ToUpper(echo)} {
				probes = append(probes, probe{`{"type":"login","name":"` + name + `"}`, loginRefused(protocol.CodeNameTaken)})
			}
		}
	} else {
		probes = append(probes,
			probe{`{"type":"offer","name":"` + nobody + `","offer":{}}`, errorCode(protocol.CodeNotLoggedIn)},
			probe{`{"type":"leave"}`, errorCode(protocol.CodeNotLoggedIn)},
		)
	}
	rand.Shuffle(len(probes), func(i, j int) { probes[i], probes[j] = probes[j], probes[i] })
	for _, p := range probes[:3+rand.IntN(len(probes)-2)] {
		if err := c.Send(e.ctx, []byte(p.msg)); err != nil {
			return err
		}
		if err := e.expect(c, "after "+p.msg, p.want); err != nil {
			return err
		}
	}
	if loggedIn {
		// The name stays its own: another connection cannot take it without the token, nor with a wrong one.
		c2, err := e.dial()
		if err != nil {
			return err
		}
		for _, token := range []string{"", "not-the-token"} {
			if err := c2.SendLogin(e.ctx, n, token); err != nil {
				return err
			}
			if err := e.expect(c2, "a second connection", loginRefused(protocol.CodeNameTaken)); err != nil {
				return err
			}
		}
		if err := e.search(c, n, n, 1); err != nil {
			return err
		}
		closeWith(c2, rand.IntN(closeWays))
	}
	closeWith(c, rand.IntN(closeWays))
	return nil
}

// What tandem lets through before it refuses (docs/limits.md): the flood episodes check the refusals against
// these, allowing for what refills while an episode runs.
const (
	renegotiationBurst    = 5               // offers in a row within a call
	renegotiationInterval = 2 * time.Second // then one every interval
	unansweredMessages    = 64              // what a caller may send a callee who has not accepted it: messages
	unansweredBytes       = 128 << 10       // and bytes of payload,
	unansweredRefill      = time.Minute     // refilled over a minute
)

// epOfferFlood: in a call, one side sends more renegotiation offers in a row than the server takes (abusive on
// purpose): the first ones reach the peer, the rest are refused with rate_limited and not delivered, and the
// call goes on (the peer answers the last offer it got, candidates still flow, and either side hangs up).
func (e *episode) epOfferFlood() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	if rand.IntN(2) == 0 { // the callee floods
		a, b, an, bn = b, a, bn, an
	}
	pl := &e.ch.g.pl
	n := renegotiationBurst + 3 + rand.IntN(6)
	start := time.Now()
	for range n {
		if err := a.SendOffer(e.ctx, bn, pl.offer); err != nil {
			return err
		}
	}
	// A candidate after them, which the server never limits within a call, tells b that the offers are over.
	if err := a.SendCandidate(e.ctx, bn, pl.candidate); err != nil {
		return err
	}
	delivered := 0
	for {
		m, err := b.Read(e.ctx)
		if err != nil {
			return fmt.Errorf("%s reading the offers: %w", bn, err)
		}
		if relayedPayload(protocol.TypeCandidate, an, pl.candidate).match(m) {
			break
		}
		if !relayedPayload(protocol.TypeOffer, an, pl.offer).match(m) {
			return fmt.Errorf("%s got %s while reading offers from %s", bn, describe(m), an)
		}
		delivered++
	}
	// a's own request after them tells a that its refusals are all in.
	if err := a.SendUsers(e.ctx, an, 1); err != nil {
		return err
	}
	refused := 0
	for {
		m, err := a.Read(e.ctx)
		if err != nil {
			return fmt.Errorf("%s reading its refusals: %w", an, err)
		}
		if m.Type == protocol.TypeUsers {
			break
		}
		if m.Type != protocol.TypeError || m.Code != protocol.CodeRateLimited || m.Request != protocol.TypeOffer || m.Name != bn {
			return fmt.Errorf("%s got %s while waiting for rate_limited (offer to %s)", an, describe(m), bn)
		}
		refused++
	}
	refills := int(time.Since(start)/renegotiationInterval) + 1
	switch {
	case delivered+refused != n:
		return fmt.Errorf("%s sent %d offers in a row: %d delivered, %d refused", an, n, delivered, refused)
	case delivered < renegotiationBurst || delivered > renegotiationBurst+refills:
		return fmt.Errorf("%s sent %d offers in a row: %d delivered, want %d (and at most %d more in %v)", an, n,
			delivered, renegotiationBurst, refills, time.Since(start).Round(time.Millisecond))
	}
	// The call goes on.
	if err := b.SendAnswer(e.ctx, an, pl.answer); err != nil {
		return err
	}
	if err := e.expect(a, an, relayedPayload(protocol.TypeAnswer, bn, pl.answer)); err != nil {
		return err
	}
	if err := b.SendCandidate(e.ctx, an, pl.candidate); err != nil {
		return err
	}
	if err := e.expect(a, an, relayedPayload(protocol.TypeCandidate, bn, pl.candidate)); err != nil {
		return err
	}
	if err := b.SendLeave(e.ctx, an, protocol.ReasonHangup); err != nil {
		return err
	}
	if err := e.expect(a, an, leaveFrom(bn, protocol.ReasonHangup)); err != nil {
		return err
	}
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// bigCandidate is a candidate of about 16 KiB (a long usernameFragment): nothing a browser sends, but what a
// stranger who wants to fill a callee's send queue would.
var bigCandidate = json.RawMessage(`{"candidate":"candidate:1 1 udp 2122260223 203.0.113.9 49152 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"` +
	strings.Repeat("u", 16<<10) + `"}`)

// admitted is how many of n messages of size bytes a callee who has not accepted the call takes after an offer
// of offer bytes, with extra messages and bytes of refill: the budget's rule (a full budget takes any message).
func admitted(offer, size, n int, extra float64) int {
	messages := unansweredMessages + extra*unansweredMessages - 1
	bytes := unansweredBytes + extra*unansweredBytes - float64(offer)
	taken := 0
	for range n {
		if messages < 1 || bytes < float64(size) {
			break
		}
		messages--
		bytes -= float64(size)
		taken++
	}
	return taken
}

// epStrangerFlood: a rings b and, before b answers, pushes candidates at it beyond what a caller may send a
// callee who has not accepted it (abusive on purpose: small candidates past 64 messages, or 16 KiB ones past
// 128 KiB). b gets what fits in that budget and no more, stays connected, and can still take the call (then a's
// candidates reach it again) or decline it (then a cannot ring again at once).
func (e *episode) epStrangerFlood() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := e.ring(a, b, an, bn); err != nil {
		return err
	}
	pl := &e.ch.g.pl
	cand, n := pl.candidate, unansweredMessages+4+rand.IntN(20)
	if rand.IntN(2) == 0 {
		cand, n = bigCandidate, unansweredBytes/len(bigCandidate)+2+rand.IntN(8)
	}
	for range n {
		if err := a.SendCandidate(e.ctx, bn, cand); err != nil {
			return err
		}
	}
	if err := a.SendUsers(e.ctx, an, 1); err != nil { // its answer comes after every refusal
		return err
	}
	refused := 0
	for {
		m, err := a.Read(e.ctx)
		if err != nil {
			return fmt.Errorf("%s reading its refusals: %w", an, err)
		}
		if m.Type == protocol.TypeUsers {
			break
		}
		if m.Type != protocol.TypeError || m.Code != protocol.CodeNotAnswered || m.Request != protocol.TypeCandidate || m.Name != bn {
			return fmt.Errorf("%s got %s while waiting for not_answered (candidate to %s)", an, describe(m), bn)
		}
		refused++
	}
	delivered := n - refused
	refill := float64(time.Since(start)) / float64(unansweredRefill)
	if least, most := admitted(len(pl.offer), len(cand), n, 0), admitted(len(pl.offer), len(cand), n, refill)+1; delivered < least || delivered > most {
		return fmt.Errorf("%s sent %d candidates of %d bytes to %s, who had not answered: %d delivered, want %d to %d",
			an, n, len(cand), bn, delivered, least, most)
	}
	for i := range delivered {
		if err := e.expect(b, bn, relayedPayload(protocol.TypeCandidate, an, cand)); err != nil {
			return fmt.Errorf("candidate %d of %d delivered: %w", i+1, delivered, err)
		}
	}
	if rand.IntN(2) == 0 {
		// b declines: nothing more reached it meanwhile, and a cannot ring again at once.
		if err := b.SendLeave(e.ctx, an, protocol.ReasonDeclined); err != nil {
			return err
		}
		if err := e.expect(a, an, leaveFrom(bn, protocol.ReasonDeclined)); err != nil {
			return err
		}
		if err := e.ringRefused(a, b, an, bn); err != nil {
			return err
		}
	} else {
		// b answers: nothing more reached it meanwhile (a's next candidate is the next thing it reads), and a's
		// candidates are no longer counted.
		if err := b.SendAnswer(e.ctx, an, pl.answer); err != nil {
			return err
		}
		if err := e.expect(a, an, relayedPayload(protocol.TypeAnswer, bn, pl.answer)); err != nil {
			return err
		}
		for range 3 {
			if err := a.SendCandidate(e.ctx, bn, cand); err != nil {
				return err
			}
			if err := e.expect(b, bn, relayedPayload(protocol.TypeCandidate, an, cand)); err != nil {
				return fmt.Errorf("after the answer: %w", err)
			}
		}
		if err := a.SendLeave(e.ctx, bn, protocol.ReasonHangup); err != nil {
			return err
		}
		if err := e.expect(b, bn, leaveFrom(an, protocol.ReasonHangup)); err != nil {
			return err
		}
	}
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}
