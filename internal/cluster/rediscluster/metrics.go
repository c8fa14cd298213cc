package rediscluster

import "github.com/prometheus/client_golang/prometheus"

// metrics are the backend's counters, for /metrics (docs/cluster.md lists what to watch).
type metrics struct {
	sent, received, undelivered, publishes       prometheus.Counter
	heartbeatFailures, epochChanges, nodesDown   prometheus.Counter
	subscriptions, probeFailures, conflicts      prometheus.Counter
	masterSwitches, orphansFreed, holdersEvicted prometheus.Counter
}

func newMetrics(b *Backend) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_cluster_" + name, Help: help})
	}
	m := &metrics{
		sent:              c("messages_sent_total", "Messages published to other nodes' channels (and received by them)."),
		received:          c("messages_received_total", "Messages received from other nodes."),
		publishes:         c("publishes_total", "PUBLISH commands that reached another node: each carries one message, or a pack of all that were queued for the node (messages_sent_total / publishes_total is the messages per pack)."),
		undelivered:       c("messages_undelivered_total", "Messages to other nodes given up: the node was not subscribed for the retry time, or its outbox was full."),
		heartbeatFailures: c("heartbeat_failures_total", "Heartbeats (lease renewals) that failed: Redis was unreachable or slow."),
		epochChanges:      c("redis_data_lost_total", "Times Redis was found to have lost its data (a restart without persistence, a flush): this node registered its users again."),
		nodesDown:         c("nodes_down_total", "Other nodes whose lease ran out."),
		subscriptions:     c("subscriptions_total", "Subscriptions to this node's channel (the first, and each one made again after a loss or a failed probe)."),
		probeFailures:     c("probe_failures_total", "Times the subscription delivered nothing, not even this node's probe, and was made again."),
		conflicts:         c("name_conflicts_total", "Users of this node closed (4001) because their name was held by another after Redis lost its data."),
		masterSwitches:    c("redis_master_changes_total", "Times the Redis this node reaches was found to be another server (a Sentinel failover, or a restart): this node registered its users again."),
		holdersEvicted:    c("stale_sessions_closed_total", "Sessions of this node closed (4001) because Redis gave their name to another session in two cleanup passes in a row (a resume elsewhere whose takeover never reached this node)."),
		orphansFreed:      c("orphans_freed_total", "Names Redis said a session of this node held that no session of it did (a claim whose reply came too late, a release lost in a failover), freed by the cleanup pass."),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer, b *Backend) {
	{
		reg.MustRegister(m.sent, m.received, m.undelivered, m.publishes, m.heartbeatFailures, m.epochChanges, m.nodesDown,
			m.subscriptions, m.probeFailures, m.conflicts, m.masterSwitches, m.orphansFreed, m.holdersEvicted,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tandem_cluster_ready",
				Help: "1 while this node can take new users (Redis reachable, lease held, subscribed), else 0."},
				func() float64 {
					if b.Ready() == nil {
						return 1
					}
					return 0
				}))
	}
}
