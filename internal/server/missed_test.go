package server_test

import (
	"testing"

	"tandem/client"
	"tandem/protocol"
)

// TestMissedWhileBusy (issue 14, item 3): a user in a call whose login asked for it ("missed": true) is told by
// a "missed" message who called meanwhile and was answered busy, once per caller; a tutorial client in a call,
// whose login did not ask, gets nothing it would not know. A "missed" field that is not a boolean is refused.
func TestMissedWhileBusy(t *testing.T) {
	t.Parallel()
	r := startServer(t, nil)
	ctx := ctx5(t)
	tut := &client.Options{Tutorial: true}

	alice := r.user("alice", nil)
	bob := r.dial(nil)
	send(t, bob, `{"type":"login","name":"bob","missed":true}`)
	if m := next(t, bob); m.Type != protocol.TypeLogin || !m.Success {
		t.Fatalf("bob's login: %+v", m)
	}
	carol := r.user("carol", nil)
	// dave and erin: tutorial clients in a call of their own.
	dave, erin := r.user("dave", tut), r.user("erin", tut)

	call := func(caller *client.Client, callerName string, callee *client.Client, calleeName string) {
		t.Helper()
		if err := caller.SendOffer(ctx, calleeName, []byte(offerSDP)); err != nil {
			t.Fatal(err)
		}
		if m := next(t, callee); m.Type != protocol.TypeOffer {
			t.Fatalf("%s: got %+v, want the offer", calleeName, m)
		}
		if err := callee.SendAnswer(ctx, callerName, []byte(answerSDP)); err != nil {
			t.Fatal(err)
		}
		if _, err := caller.WaitFor(ctx, protocol.TypeAnswer); err != nil {
			t.Fatal(err)
		}
	}
	call(alice, "alice", bob, "bob")
	call(dave, "dave", erin, "erin")

	// carol calls bob twice, then erin; each time she hears busy.
	for _, callee := range []string{"bob", "bob", "erin"} {
		if err := carol.SendOffer(ctx, callee, []byte(offerSDP)); err != nil {
			t.Fatal(err)
		}
		if m := expectError(t, carol, protocol.CodeBusy); m.Name != callee {
			t.Fatalf("carol calling %s: %+v", callee, m)
		}
	}
	// bob was told once, and then nothing but what alice sends.
	if err := alice.SendCandidate(ctx, "bob", []byte(candidate)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, bob); m.Type != protocol.TypeMissed || m.Name != "carol" {
		t.Fatalf("bob: got %+v, want missed from carol", m)
	}
	if m := next(t, bob); m.Type != protocol.TypeCandidate || m.Name != "alice" {
		t.Fatalf("bob: got %+v, want alice's candidate and no second missed", m)
	}
	// erin's login did not ask: the next thing she gets is dave's candidate.
	if err := dave.SendCandidate(ctx, "erin", []byte(candidate)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, erin); m.Type != protocol.TypeCandidate || m.Name != "dave" {
		t.Fatalf("erin: got %+v, want dave's candidate (nothing of carol's call)", m)
	}

	bad := r.dial(nil)
	send(t, bad, `{"type":"login","name":"frank","missed":"yes"}`)
	if m := expectError(t, bad, protocol.CodeInvalidMessage); m.Message != `field "missed" must be true or false` {
		t.Errorf("a login with \"missed\":\"yes\": %+v", m)
	}
}
