package hub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/cluster"
	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
)

// relayedByType reads tandem_messages_relayed_total from reg, by type.
func relayedByType(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tandem_messages_relayed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return got
}

// TestRelayedCountedOnceAcrossNodes: a message between users of two nodes is counted in
// tandem_messages_relayed_total once in the cluster, by the node that hands it to its recipient's connection
// (docs/cluster.md), so that the nodes' counters add up to what users sent one another.
func TestRelayedCountedOnceAcrossNodes(t *testing.T) {
	m := cluster.NewMemory(time.Second)
	var (
		hubs []*hub.Hub
		regs []*prometheus.Registry
	)
	for i := range 2 {
		reg := prometheus.NewRegistry()
		c := hubtest.Config()
		c.Cluster, c.Metrics = m.Node(fmt.Sprint("node", i)), hub.NewMetrics(reg)
		h := hub.New(c)
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Shutdown)
		hubs, regs = append(hubs, h), append(regs, reg)
	}
	a, b := hubtest.Connect(t, hubs[0]), hubtest.Connect(t, hubs[1])
	a.Login("alice")
	b.Login("bob")
	a.Send(`{"type":"offer","offer":{"sdp":"o"},"name":"bob"}`)
	a.Expect(map[string]any{"type": "ringing"})
	b.Expect(map[string]any{"type": "offer"})
	b.Send(`{"type":"answer","answer":{"sdp":"a"},"name":"alice"}`)
	a.Expect(map[string]any{"type": "answer"})
	for i := range 3 {
		a.Send(fmt.Sprintf(`{"type":"candidate","candidate":{"n":%d},"name":"bob"}`, i))
		b.Expect(map[string]any{"type": "candidate"})
	}
	for i := range 2 {
		b.Send(fmt.Sprintf(`{"type":"candidate","candidate":{"n":%d},"name":"alice"}`, i))
		a.Expect(map[string]any{"type": "candidate"})
	}
	a.Send(`{"type":"offer","offer":{"sdp":"o2"},"name":"bob"}`) // a renegotiation
	b.Expect(map[string]any{"type": "offer"})
	b.Send(`{"type":"leave","name":"alice"}`)
	a.Expect(map[string]any{"type": "leave"})

	want := []map[string]float64{
		{"offer": 0, "answer": 1, "candidate": 2, "leave": 1}, // what alice, on node 0, was handed
		{"offer": 2, "answer": 0, "candidate": 3, "leave": 0}, // what bob, on node 1, was handed
	}
	for i, reg := range regs {
		if got := relayedByType(t, reg); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("node %d counted %v relayed, want %v", i, got, want[i])
		}
	}
}
