package calllog

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/protocol"
)

// metrics are the call metrics, every label resolved up front (so that each series is there from the start, at
// zero, and counting takes no map lookup in the client library).
type metrics struct {
	started   map[string]prometheus.Counter                       // by kind
	active    map[string]prometheus.Gauge                         // by kind
	calls     map[string]map[string]prometheus.Counter            // by kind, outcome
	setup     map[string]prometheus.Observer                      // by kind
	duration  map[string]prometheus.Observer                      // by kind
	ice       map[string]prometheus.Observer                      // by kind
	rtt       map[string]prometheus.Observer                      // by kind
	loss      map[string]prometheus.Observer                      // by kind
	connected map[string]map[string]map[string]prometheus.Counter // by kind, path, transport
	reports   map[string]prometheus.Counter                       // by phase
	dropped   prometheus.Counter
}

// Transports of tandem_calls_connected_total: what a report may say, and "unknown" when it said nothing.
var transports = []string{"udp", "tcp", "tls", "unknown"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	kinds := []string{KindPerson, KindEcho}
	started := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_calls_started_total",
		Help: "Calls that rang: an offer reached a user who was free (kind: person, or echo for test calls).",
	}, []string{"kind"})
	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tandem_calls_active",
		Help: "Calls ringing or in progress now.",
	}, []string{"kind"})
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_calls_total",
		Help: "Calls that ended, by outcome: answered, declined, busy (refused: the user was in another call), " +
			"no_answer, cancelled (the caller gave up), failed.",
	}, []string{"kind", "outcome"})
	setup := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tandem_call_setup_seconds",
		Help:    "Time from a call's offer reaching the callee to the callee's answer.",
		Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60},
	}, []string{"kind"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tandem_call_duration_seconds",
		Help:    "Duration of answered calls, from the answer to the end.",
		Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
	}, []string{"kind"})
	ice := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tandem_call_ice_seconds",
		Help:    "How long ICE took to connect a call, as each party reported it.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30},
	}, []string{"kind"})
	rtt := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tandem_call_rtt_seconds",
		Help:    "Round-trip time of calls' media paths, from the parties' quality reports.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2},
	}, []string{"kind"})
	loss := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tandem_call_loss_ratio",
		Help:    "Share of media packets lost, from the parties' quality reports.",
		Buckets: []float64{0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5},
	}, []string{"kind"})
	connected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_calls_connected_total",
		Help: "Calls whose media connected, as a party reported it, by path (direct, or relay through TURN) and " +
			"transport (udp, tcp, tls, unknown). Calls whose clients send no quality report are not counted.",
	}, []string{"kind", "path", "transport"})
	reports := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_call_quality_reports_total",
		Help: "Quality reports taken from clients, by phase (connected, ended, failed).",
	}, []string{"phase"})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tandem_call_log_dropped_total",
		Help: "Call log lines dropped because the log could not keep up.",
	})
	m := &metrics{
		started: map[string]prometheus.Counter{}, active: map[string]prometheus.Gauge{},
		calls: map[string]map[string]prometheus.Counter{}, setup: map[string]prometheus.Observer{},
		duration: map[string]prometheus.Observer{}, ice: map[string]prometheus.Observer{},
		rtt: map[string]prometheus.Observer{}, loss: map[string]prometheus.Observer{},
		connected: map[string]map[string]map[string]prometheus.Counter{}, reports: map[string]prometheus.Counter{},
		dropped: dropped,
	}
	for _, k := range kinds {
		m.started[k] = started.WithLabelValues(k)
		m.active[k] = active.WithLabelValues(k)
		m.setup[k] = setup.WithLabelValues(k)
		m.duration[k] = duration.WithLabelValues(k)
		m.ice[k] = ice.WithLabelValues(k)
		m.rtt[k] = rtt.WithLabelValues(k)
		m.loss[k] = loss.WithLabelValues(k)
		m.calls[k] = map[string]prometheus.Counter{}
		for _, o := range Outcomes {
			m.calls[k][o] = calls.WithLabelValues(k, o)
		}
		m.connected[k] = map[string]map[string]prometheus.Counter{}
		for _, p := range []string{protocol.PathDirect, protocol.PathRelay} {
			m.connected[k][p] = map[string]prometheus.Counter{}
			for _, t := range transports {
				m.connected[k][p][t] = connected.WithLabelValues(k, p, t)
			}
		}
	}
	for _, p := range []string{protocol.QualityConnected, protocol.QualityEnded, protocol.QualityFailed} {
		m.reports[p] = reports.WithLabelValues(p)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{started, active, calls, setup, duration, ice, rtt, loss, connected, reports, dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("calllog: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
