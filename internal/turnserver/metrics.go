package turnserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a TURN request fails authentication, the reason label of tandem_turn_auth_failures_total.
const (
	authMalformed = "malformed" // the username is not <expiry>:<user>
	authExpired   = "expired"   // the credential's expiry has passed
	authIntegrity = "integrity" // the message was not signed with the credential's password: forged or wrong user
)

type metrics struct {
	allocations  prometheus.Gauge
	relayedBytes *prometheus.CounterVec
	toPeer       prometheus.Counter
	fromPeer     prometheus.Counter
	authFailures *prometheus.CounterVec
	deniedPeers  prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		allocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_turn_allocations",
			Help: "TURN allocations (relay sockets) open now.",
		}),
		relayedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_turn_relayed_bytes_total",
			Help: "Payload bytes relayed by TURN allocations, by direction: to_peer (sent from relay sockets) " +
				"and from_peer (received on relay sockets).",
		}, []string{"direction"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_turn_auth_failures_total",
			Help: "TURN requests refused for their credentials, by reason: malformed, expired, integrity (forged).",
		}, []string{"reason"}),
		deniedPeers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_turn_denied_peers_total",
			Help: "TURN permissions, channel bindings and sends refused because the peer address is denied.",
		}),
	}
	m.toPeer = m.relayedBytes.WithLabelValues("to_peer")
	m.fromPeer = m.relayedBytes.WithLabelValues("from_peer")
	for _, r := range []string{authMalformed, authExpired, authIntegrity} {
		m.authFailures.WithLabelValues(r)
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	cs := []prometheus.Collector{m.allocations, m.relayedBytes, m.authFailures, m.deniedPeers}
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			for _, done := range cs[:i] {
				r.Unregister(done)
			}
			return fmt.Errorf("turnserver: registering metrics: %w", err)
		}
	}
	return nil
}
