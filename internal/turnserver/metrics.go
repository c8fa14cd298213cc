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
	authEnded     = "ended"     // the credential's login has ended (or is unknown to this server: minted before a restart)
)

// Limits a client reached, the limit label of tandem_turn_limited_total (docs/limits.md).
const (
	limitExpired      = "expired"        // an allocation asked for with an expired credential
	limitSessionEnded = "session_ended"  // an allocation asked for with the credential of a login that has ended
	limitSession      = "session"        // the login's allocations
	limitAddress      = "address"        // the client address's allocations, or its share of the relay ports
	limitPermissions  = "permissions"    // an allocation's permission and channel requests
	limitEvenPort     = "even_port"      // an Allocate asking for an even port or a reserved one, not supported
	limitTCPConns     = "tcp_conns"      // TCP connections in all
	limitTCPAddress   = "tcp_conns_addr" // TCP connections of the client address
	limitTCPIdle      = "tcp_idle"       // a TCP connection without an allocation for too long
	limitTCPGarbage   = "tcp_garbage"    // a TCP connection that sent something that is not STUN or ChannelData
)

var allLimits = []string{
	limitExpired, limitSessionEnded, limitSession, limitAddress, limitPermissions, limitEvenPort,
	limitTCPConns, limitTCPAddress, limitTCPIdle, limitTCPGarbage,
}

type metrics struct {
	allocations  prometheus.Gauge
	relayedBytes *prometheus.CounterVec
	toPeer       prometheus.Counter
	fromPeer     prometheus.Counter
	authFailures *prometheus.CounterVec
	deniedPeers  prometheus.Counter
	limited      *prometheus.CounterVec
	tcpConns     prometheus.Gauge
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
			Help: "TURN requests refused for their credentials, by reason: malformed, expired, integrity (forged), " +
				"ended (the login is gone).",
		}, []string{"reason"}),
		deniedPeers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_turn_denied_peers_total",
			Help: "TURN permissions, channel bindings and sends refused because the peer address is denied.",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_turn_limited_total",
			Help: "TURN requests and connections refused or closed at a limit, by limit (docs/limits.md).",
		}, []string{"limit"}),
		tcpConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_turn_tcp_connections",
			Help: "TCP connections to the STUN/TURN port open now.",
		}),
	}
	m.toPeer = m.relayedBytes.WithLabelValues("to_peer")
	m.fromPeer = m.relayedBytes.WithLabelValues("from_peer")
	for _, r := range []string{authMalformed, authExpired, authIntegrity, authEnded} {
		m.authFailures.WithLabelValues(r)
	}
	for _, l := range allLimits {
		m.limited.WithLabelValues(l)
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	cs := []prometheus.Collector{m.allocations, m.relayedBytes, m.authFailures, m.deniedPeers, m.limited, m.tcpConns}
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
