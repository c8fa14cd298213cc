package rediscluster

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/rueidis"

	"tandem/internal/cluster"
	"tandem/internal/redistest"
)

// recorder is a node's Local that keeps (copies of) what is delivered to it and what it is told was undelivered.
type recorder struct {
	mu          sync.Mutex
	got         []cluster.Envelope
	undelivered []cluster.Envelope
}

func keep(e *cluster.Envelope) cluster.Envelope {
	c := *e
	c.Frame = bytes.Clone(e.Frame)
	return c
}

func (r *recorder) Deliver(e *cluster.Envelope) {
	r.mu.Lock()
	r.got = append(r.got, keep(e))
	r.mu.Unlock()
}
func (r *recorder) Undelivered(e *cluster.Envelope) {
	r.mu.Lock()
	r.undelivered = append(r.undelivered, keep(e))
	r.mu.Unlock()
}
func (r *recorder) NodeDown(string)                           {}
func (r *recorder) Registrations() []cluster.Registration     { return nil }
func (r *recorder) Evict(string, string)                      {}
func (r *recorder) Orphans([]cluster.Record) []cluster.Record { return nil } // it holds no names

// await returns what was delivered (or reported undelivered) once there are n of it, failing the test after 10 s.
func (r *recorder) await(t *testing.T, n int, undelivered bool) []cluster.Envelope {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		l := r.got
		if undelivered {
			l = r.undelivered
		}
		l = l[:len(l):len(l)]
		r.mu.Unlock()
		if len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d envelopes after 10 s", len(l), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startBus starts a node of a bare bus (no hub) on r; legacy makes it a node of the version before packs.
func startBus(t *testing.T, r *redistest.Server, id string, legacy bool) (*Backend, *recorder) {
	t.Helper()
	b, err := New(testConfig(r.URL(), "p:", id))
	if err != nil {
		t.Fatal(err)
	}
	b.legacy = legacy
	rec := &recorder{}
	if err := b.Start(rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(true) })
	deadline := time.Now().Add(10 * time.Second)
	for b.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready: %v", id, b.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return b, rec
}

// numbered is the i-th envelope of a test's stream from node from: every field set, the frame growing with i.
func numbered(from string, i int) *cluster.Envelope {
	return &cluster.Envelope{Kind: cluster.Message, From: "user-" + from, FromNode: from, FromSession: "s" + from,
		Caller: uint64(i) << 20, To: "bob", ToSession: fmt.Sprint("t", i), Accepted: i%3 == 0, Forwarded: i%5 == 0,
		Frame: []byte(fmt.Sprintf(`{"type":"candidate","name":"user-%s","candidate":{"n":%d,"pad":"%s"}}`, from, i,
			strings.Repeat("x", i%700)))}
}

// sendStream sends n numbered envelopes from node from to node to, as fast as the outbox takes them.
func sendStream(t *testing.T, from *Backend, to string, n int) {
	t.Helper()
	for i := range n {
		if !from.Send(to, numbered(from.Node(), i)) {
			t.Fatalf("the outbox refused envelope %d", i)
		}
	}
}

// checkStream fails unless got is exactly the n numbered envelopes of node from, in order.
func checkStream(t *testing.T, got []cluster.Envelope, from string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d envelopes, want %d", len(got), n)
	}
	for i, e := range got {
		if !sameEnvelope(&e, numbered(from, i)) {
			t.Fatalf("envelope %d is %+v, want %+v", i, e, *numbered(from, i))
		}
	}
}

func sameEnvelope(a, b *cluster.Envelope) bool {
	return a.Kind == b.Kind && a.Accepted == b.Accepted && a.Forwarded == b.Forwarded && a.From == b.From &&
		a.FromNode == b.FromNode && a.FromSession == b.FromSession && a.Caller == b.Caller && a.To == b.To &&
		a.ToSession == b.ToSession && bytes.Equal(a.Frame, b.Frame)
}

// observe subscribes a plain Redis client to channels and returns what was published on each, in order.
func observe(t *testing.T, r *redistest.Server, channels ...string) func() map[string][]string {
	t.Helper()
	opt, err := rueidis.ParseURL(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string][]string{}
	dc, release := c.Dedicate()
	dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(m rueidis.PubSubMessage) {
		mu.Lock()
		seen[m.Channel] = append(seen[m.Channel], strings.Clone(m.Message))
		mu.Unlock()
	}})
	if err := dc.Do(context.Background(), dc.B().Subscribe().Channel(channels...).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release(); c.Close() })
	return func() map[string][]string {
		mu.Lock()
		defer mu.Unlock()
		out := map[string][]string{}
		for k, v := range seen {
			out[k] = append([]string(nil), v...)
		}
		return out
	}
}

// TestBusPacks: between nodes that take packs, what an outbox has queued goes in packs on the pack channel, and
// arrives complete and in order; nothing but probes goes as single envelopes.
func TestBusPacks(t *testing.T) {
	r := redistest.Start(t)
	a, _ := startBus(t, r, "a", false)
	b, got := startBus(t, r, "b", false)
	seen := observe(t, r, b.channel("b"), b.packChannel("b"))
	const n = 3000
	sendStream(t, a, "b", n)
	checkStream(t, got.await(t, n, false), "a", n)

	published := seen()
	packed := 0
	for _, msg := range published[b.packChannel("b")] {
		var e cluster.Envelope
		k, err := unpack(msg, &e, func(*cluster.Envelope) {})
		if err != nil {
			t.Fatalf("an undecodable pack: %v", err)
		}
		packed += k
	}
	// The observer's subscription was made after b's: what it saw on the pack channel is a tail of the stream,
	// all of it when it subscribed before the first pack; on the single channel, only b's probes.
	if packed == 0 {
		t.Fatal("no pack was published on the pack channel")
	}
	for _, msg := range published[b.channel("b")] {
		var e cluster.Envelope
		if err := decodeString(msg, &e); err != nil || e.Kind != cluster.Probe {
			t.Fatalf("a single envelope on the single channel, not a probe: %q", msg[:min(len(msg), 60)])
		}
	}
	if packs := len(published[b.packChannel("b")]); packs > packed {
		t.Fatalf("%d packs for %d envelopes", packs, packed)
	}
}

// TestBusOlderNode: a node of the version before packs (it subscribes to its single channel only, and drops a
// pack as undecodable) is sent single envelopes, in order; and what it sends a node that takes packs arrives.
func TestBusOlderNode(t *testing.T) {
	r := redistest.Start(t)
	a, fromOld := startBus(t, r, "a", false)
	old, got := startBus(t, r, "old", true)
	seen := observe(t, r, old.channel("old"))
	const n = 2000
	sendStream(t, a, "old", n)
	checkStream(t, got.await(t, n, false), "a", n)
	for _, msg := range seen()[old.channel("old")] {
		if isPack(msg) {
			t.Fatal("a pack was published on the single channel")
		}
	}
	sendStream(t, old, "a", n)
	checkStream(t, fromOld.await(t, n, false), "old", n)
	// And again: the outbox that found the older node sends it single envelopes straight away.
	sendStream(t, a, "old", n)
	checkStream(t, got.await(t, 2*n, false)[n:], "a", n)
}

// TestBusUndelivered: envelopes for a node that is not subscribed are retried for retryFor, then each is reported
// undelivered to the sender, in order and whole.
func TestBusUndelivered(t *testing.T) {
	r := redistest.Start(t)
	a, rec := startBus(t, r, "a", false)
	const n = 500
	start := time.Now()
	sendStream(t, a, "ghost", n)
	checkStream(t, rec.await(t, n, true), "a", n)
	if d := time.Since(start); d < retryFor {
		t.Fatalf("reported undelivered after %v, before the retry time (%v)", d, retryFor)
	}
}

func TestPackCoding(t *testing.T) {
	var envs []*cluster.Envelope
	pack := startPack(nil)
	for i := range 50 {
		envs = append(envs, numbered("n", i))
		pack = appendPacked(pack, encode(envs[i]))
	}
	if countPacked(pack) != 50 {
		t.Fatalf("countPacked: %d", countPacked(pack))
	}
	var e cluster.Envelope
	i := 0
	n, err := unpack(string(pack), &e, func(e *cluster.Envelope) {
		if !sameEnvelope(e, envs[i]) {
			t.Fatalf("envelope %d is %+v", i, *e)
		}
		i++
	})
	if err != nil || n != 50 {
		t.Fatalf("unpack: %d, %v", n, err)
	}
	for _, fresh := range []bool{false, true} {
		rest := dropPacked(bytes.Clone(pack), 20, fresh)
		i = 20
		if n, err := unpack(string(rest), &e, func(e *cluster.Envelope) {
			if !sameEnvelope(e, envs[i]) {
				t.Fatalf("after dropping 20: envelope %d is %+v", i, *e)
			}
			i++
		}); err != nil || n != 30 {
			t.Fatalf("after dropping 20: %d, %v", n, err)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {packVersion, 5, 1, 2}, {packVersion, 0x80}, append(bytes.Clone(pack), 3, 1, 0, 0)} {
		if _, err := unpack(string(bad), &e, func(*cluster.Envelope) {}); err == nil {
			t.Errorf("unpacked %v", bad)
		}
	}
}

// FuzzUnpack: unpacking any input never panics, never gives a frame outside the input, and what it decodes,
// packed again, unpacks to the same envelopes.
func FuzzUnpack(f *testing.F) {
	pack := startPack(nil)
	for i := range 3 {
		pack = appendPacked(pack, encode(numbered("n", i)))
	}
	f.Add(pack)
	f.Add(startPack(nil))
	f.Add([]byte{packVersion, 11, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := string(data)
		lo := uintptr(unsafe.Pointer(unsafe.StringData(in)))
		hi := lo + uintptr(len(in))
		var got []cluster.Envelope
		var e cluster.Envelope
		n, err := unpack(in, &e, func(e *cluster.Envelope) {
			if len(e.Frame) > 0 {
				p := uintptr(unsafe.Pointer(unsafe.SliceData(e.Frame)))
				if p < lo || p+uintptr(len(e.Frame)) > hi {
					t.Fatalf("a frame outside the input")
				}
			}
			got = append(got, keep(e))
		})
		if n != len(got) {
			t.Fatalf("unpack said %d, delivered %d", n, len(got))
		}
		if err == nil && !isPack(in) {
			t.Fatal("unpacked what is not a pack")
		}
		again := startPack(nil)
		for i := range got {
			again = appendPacked(again, encode(&got[i]))
		}
		i := 0
		if m, err := unpack(string(again), &e, func(e *cluster.Envelope) {
			if !sameEnvelope(e, &got[i]) {
				t.Fatalf("envelope %d packed again is %+v, was %+v", i, *e, got[i])
			}
			i++
		}); err != nil || m != len(got) {
			t.Fatalf("packed again: %d of %d, %v", m, len(got), err)
		}
		if countPacked(again) != len(got) {
			t.Fatalf("countPacked: %d of %d", countPacked(again), len(got))
		}
	})
}
