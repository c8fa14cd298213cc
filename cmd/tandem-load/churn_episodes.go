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

// epDecline: the callee declines.
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
	closeWith(a, rand.IntN(closeWays))
	closeWith(b, rand.IntN(closeWays))
	return nil
}

// epNoAnswer: the caller gives up after ringing.
func (e *episode) epNoAnswer() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.ring(a, b, an, bn); err != nil {
		return err
	}
	if err := a.SendLeave(e.ctx, bn, protocol.ReasonNoAnswer); err != nil {
		return err
	}
	if err := e.expect(b, bn, leaveFrom(an, protocol.ReasonNoAnswer)); err != nil {
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

// burst sends n offers (renegotiations, 2.7 kB each) and candidates from c to the user to, and stops at the
// first error.
func (e *episode) burst(c *client.Client, to string, n int) error {
	pl := &e.ch.g.pl
	for i := range n {
		var err error
		if i%3 == 0 {
			err = c.SendOffer(e.ctx, to, pl.offer)
		} else {
			err = c.SendCandidate(e.ctx, to, pl.candidate)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// isRelayFrom matches offers and candidates from name: the messages of a burst.
func isRelayFrom(name string) func(*client.Message) bool {
	return func(m *client.Message) bool {
		return (m.Type == protocol.TypeOffer || m.Type == protocol.TypeCandidate) && m.Name == name
	}
}

// epResetBurstOut: in a call, a sends a burst (up to about 100 kB, more than the server reads at once) and is
// dropped or reset in the middle of it; b gets what came through, then leave "disconnected".
func (e *episode) epResetBurstOut() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	n := 20 + rand.IntN(100)
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

// epResetBurstIn: in a call, b sends a burst to a, which reads a little of it (or nothing) and is reset or
// dropped while the server is still writing to it; b gets leave "disconnected" (and errors for what it sent
// after a was gone).
func (e *episode) epResetBurstIn() error {
	a, b, an, bn, err := e.pair()
	if err != nil {
		return err
	}
	if err := e.call(a, b, an, bn); err != nil {
		return err
	}
	n := 20 + rand.IntN(100)
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
	if loggedIn {
		if _, err := e.loginAs(c, n, ""); err != nil {
			return err
		}
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
