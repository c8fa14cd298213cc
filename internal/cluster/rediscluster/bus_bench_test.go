package rediscluster

import (
	"bytes"
	"testing"
	"time"

	"tandem/internal/cluster"
	"tandem/internal/redistest"
)

// counting is a node's Local that only counts what is delivered to it.
type counting struct{ got chan struct{} }

func (c *counting) Deliver(*cluster.Envelope)             { c.got <- struct{}{} }
func (c *counting) NodeDown(string)                       {}
func (c *counting) Registrations() []cluster.Registration { return nil }
func (c *counting) Evict(string, string)                  {}
func (c *counting) Undelivered(*cluster.Envelope)         {}

// BenchmarkBus sends relayed messages (an offer's size) from one node to another through a real redis-server,
// 64 in flight, as a relay between many pairs of users does: the cost of the message path between nodes (the
// outbox, the client's pipeline, the subscription, decoding), both nodes in this process.
func BenchmarkBus(b *testing.B) {
	r := redistest.Start(b)
	const window = 64
	nodes := make([]*Backend, 2)
	locals := make([]*counting, 2)
	for i, id := range []string{"a", "b"} {
		n, err := New(testConfig(r.URL(), "bench:", id))
		if err != nil {
			b.Fatal(err)
		}
		locals[i] = &counting{got: make(chan struct{}, 2*window)}
		if err := n.Start(locals[i]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Close(true) })
		deadline := time.Now().Add(10 * time.Second)
		for n.Ready() != nil {
			if time.Now().After(deadline) {
				b.Fatalf("node %s not ready: %v", id, n.Ready())
			}
			time.Sleep(10 * time.Millisecond)
		}
		nodes[i] = n
	}
	frame := append([]byte(`{"type":"offer","name":"alice","offer":{"type":"offer","sdp":"`),
		append(bytes.Repeat([]byte(`a=candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host\r\n`), 40), `"}}`...)...)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	inflight := 0
	for range b.N {
		for inflight >= window {
			<-locals[1].got
			inflight--
		}
		if !nodes[0].Send("b", &cluster.Envelope{Kind: cluster.Message, From: "alice", FromNode: "a", To: "bob", Frame: frame}) {
			b.Fatal("the outbox refused a message")
		}
		inflight++
	}
	for ; inflight > 0; inflight-- {
		<-locals[1].got
	}
}
