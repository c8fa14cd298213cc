package hub

import (
	"github.com/prometheus/client_golang/prometheus"

	"tandem/protocol"
)

// Metrics counts what the hub does, for /metrics.
type Metrics struct {
	connections  prometheus.Gauge
	online       prometheus.Gauge
	logins       prometheus.Counter
	loginsFailed prometheus.Counter
	relayedBy    map[string]prometheus.Counter
	errorsBy     map[string]prometheus.Counter
	relayedVec   *prometheus.CounterVec
	errorsVec    *prometheus.CounterVec
}

// NewMetrics creates the hub's metrics and registers them with reg, unless reg is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_connections", Help: "Open signaling connections, logged in or not."}),
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_users_online", Help: "Users logged in."}),
		logins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_logins_total", Help: "Successful logins."}),
		loginsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_logins_refused_total", Help: "Logins refused because the name was taken."}),
		relayedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_messages_relayed_total", Help: "Messages relayed from one user to another, by type."}, []string{"type"}),
		errorsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_errors_total", Help: "Errors answered to clients, by code."}, []string{"code"}),
		relayedBy: map[string]prometheus.Counter{},
		errorsBy:  map[string]prometheus.Counter{},
	}
	// Resolve every label up front: the hot path then only increments.
	for _, t := range []string{protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeLeave} {
		m.relayedBy[t] = m.relayedVec.WithLabelValues(t)
	}
	for _, c := range []string{
		protocol.CodeInvalidJSON, protocol.CodeInvalidMessage, protocol.CodeUnknownType,
		protocol.CodeBinaryNotSupported, protocol.CodeTooLarge, protocol.CodeRateLimited, protocol.CodeNotLoggedIn,
		protocol.CodeNotOnline, protocol.CodeBusy, protocol.CodeSelfCall, protocol.CodeNotInCall,
		protocol.CodeInvalidName, protocol.CodeNameTaken, protocol.CodeNotAnswered, protocol.CodeCooldown,
		protocol.CodeInternal, protocol.CodeUnavailable,
	} {
		m.errorsBy[c] = m.errorsVec.WithLabelValues(c)
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.online, m.logins, m.loginsFailed, m.relayedVec, m.errorsVec)
	}
	return m
}

func (m *Metrics) relayed(typ string) prometheus.Counter { return m.relayedBy[typ] }

func (m *Metrics) errors(code string) prometheus.Counter {
	if c, ok := m.errorsBy[code]; ok {
		return c
	}
	return m.errorsBy[protocol.CodeInternal]
}
