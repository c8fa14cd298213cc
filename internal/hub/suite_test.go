package hub_test

import (
	"fmt"
	"testing"
	"time"

	"tandem/internal/cluster"
	"tandem/internal/hub"
	"tandem/internal/hub/hubtest"
)

// TestRoutingSingleNode runs the routing suite on one node, everything in memory: tandem without a cluster.
func TestRoutingSingleNode(t *testing.T) {
	hubtest.Run(t, func(t *testing.T, n int, cfg hub.Config) []*hub.Hub {
		h := hub.New(cfg)
		t.Cleanup(h.Shutdown)
		hubs := make([]*hub.Hub, n)
		for i := range hubs {
			hubs[i] = h
		}
		return hubs
	})
}

// TestRoutingMemoryCluster runs the routing suite on several hubs of one in-process cluster: users of different
// nodes must see what users of one node see.
func TestRoutingMemoryCluster(t *testing.T) {
	hubtest.Run(t, MemoryCluster(time.Second))
}

// MemoryCluster is a hubtest.Factory of hubs on one in-process cluster whose dead nodes' users may resume within
// grace.
func MemoryCluster(grace time.Duration) hubtest.Factory {
	return func(t *testing.T, n int, cfg hub.Config) []*hub.Hub {
		m := cluster.NewMemory(grace)
		var hubs []*hub.Hub
		for i := range n {
			c := cfg
			c.Cluster = m.Node(fmt.Sprint("node", i))
			c.ResumeGrace = grace
			h := hub.New(c)
			if err := h.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.Shutdown)
			hubs = append(hubs, h)
		}
		return hubs
	}
}
