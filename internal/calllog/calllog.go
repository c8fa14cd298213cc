// Package calllog turns the calls the hub routes into what an operator reads: one log line when a call is set up
// and one when it ends (call id, node, both users' names or hashes of them, outcome, set-up time, duration; never
// SDP or candidates), and Prometheus metrics of calls by outcome, set-up, ICE and round-trip times, the share of
// calls relayed through TURN and call durations, fed by the clients' quality reports. It implements
// hub.CallEvents.
package calllog

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/hub"
	"tandem/protocol"
)

// How names appear in the call log (Config.Names).
const (
	NamesPlain = "plain" // the users' names as they logged in
	NamesHash  = "hash"  // a keyed hash of each name: the same name gives the same hash while tandem runs
)

// Outcomes of a call: the outcome label of tandem_calls_total and the outcome of the "call ended" line.
const (
	OutcomeAnswered  = "answered"  // the callee accepted the call (and no client reported that it failed)
	OutcomeDeclined  = "declined"  // the callee refused it
	OutcomeBusy      = "busy"      // the callee was in another call: the offer was refused
	OutcomeNoAnswer  = "no_answer" // it rang unanswered until a client gave up on it
	OutcomeCancelled = "cancelled" // the caller gave up before an answer (hung up, left, called someone else)
	OutcomeFailed    = "failed"    // it could not be set up: a party's connection went while it rang, the server stopped, or a client reported that ICE failed
)

// Outcomes lists every outcome.
var Outcomes = []string{OutcomeAnswered, OutcomeDeclined, OutcomeBusy, OutcomeNoAnswer, OutcomeCancelled, OutcomeFailed}

// Kinds of call: the kind label of the call metrics.
const (
	KindPerson = "person" // between two users
	KindEcho   = "echo"   // a test call with the echo test user
)

// Bounds (docs/limits.md).
const (
	// QueueLength is how many log lines may wait for the writer; past it lines are dropped and counted in
	// tandem_call_log_dropped_total, so that a slow log never holds up the hub.
	QueueLength = 4096
	// MaxReports is how many quality reports each party may send about one call.
	MaxReports = 8
	// ReportGrace is how long after a call ended its parties may still report on it.
	ReportGrace = time.Minute
)

// Config configures a Log.
type Config struct {
	// Node names this server in every line; default the host name.
	Node string
	// Names is NamesPlain (the default) or NamesHash.
	Names string
	// Logger receives the lines; default slog.Default().
	Logger *slog.Logger
	// Registerer, if not nil, gets the metrics.
	Registerer prometheus.Registerer
}

// Log logs and counts calls. Start its writer with Start.
type Log struct {
	node  string
	hash  []byte // the key of NamesHash, nil for NamesPlain
	log   *slog.Logger
	m     *metrics
	lines chan line
	now   func() time.Time

	startOnce sync.Once
	stopOnce  sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// line is a log line waiting for the writer.
type line struct {
	at    time.Time
	level slog.Level
	msg   string
	attrs []slog.Attr
}

// New checks cfg and returns a Log; it starts nothing.
func New(cfg Config) (*Log, error) {
	l := &Log{
		node:  cfg.Node,
		log:   cfg.Logger,
		lines: make(chan line, QueueLength),
		now:   time.Now,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if l.node == "" {
		l.node, _ = os.Hostname()
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	switch cfg.Names {
	case "", NamesPlain:
	case NamesHash:
		l.hash = make([]byte, 32)
		if _, err := rand.Read(l.hash); err != nil {
			return nil, fmt.Errorf("calllog: the key for hashing names: %w", err)
		}
	default:
		return nil, fmt.Errorf("calllog: names must be %q or %q, not %q", NamesPlain, NamesHash, cfg.Names)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	l.m = m
	return l, nil
}

// Start starts the writer, which writes the lines in the order they came; the returned function stops it after
// it has written what is queued. Lines logged before Start wait for it (as many as QueueLength).
func (l *Log) Start() (stop func()) {
	l.startOnce.Do(func() { go l.write() })
	return func() {
		l.stopOnce.Do(func() { close(l.stop) })
		<-l.done
	}
}

func (l *Log) write() {
	defer close(l.done)
	h := l.log.Handler()
	emit := func(ln line) {
		if !h.Enabled(context.Background(), ln.level) {
			return
		}
		r := slog.NewRecord(ln.at, ln.level, ln.msg, 0)
		r.AddAttrs(ln.attrs...)
		_ = h.Handle(context.Background(), r)
	}
	for {
		select {
		case ln := <-l.lines:
			emit(ln)
		case <-l.stop:
			for {
				select {
				case ln := <-l.lines:
					emit(ln)
				default:
					return
				}
			}
		}
	}
}

// enqueue hands a line to the writer without waiting.
func (l *Log) enqueue(at time.Time, level slog.Level, msg string, attrs ...slog.Attr) {
	select {
	case l.lines <- line{at, level, msg, attrs}:
	default:
		l.m.dropped.Inc()
	}
}

// name is how a user's name appears in the log.
func (l *Log) name(n string) string {
	if l.hash == nil {
		return n
	}
	mac := hmac.New(sha256.New, l.hash)
	mac.Write([]byte(n))
	return "h:" + hex.EncodeToString(mac.Sum(nil)[:6])
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func kindOf(echo bool) string {
	if echo {
		return KindEcho
	}
	return KindPerson
}

// Started implements hub.CallEvents.
func (l *Log) Started(caller, callee string, echo bool) hub.Call {
	c := &call{log: l, id: newID(), kind: kindOf(echo), caller: caller, callee: callee, started: l.now()}
	l.m.started[c.kind].Inc()
	l.m.active[c.kind].Inc()
	l.enqueue(c.started, slog.LevelDebug, "call ringing", c.who()...)
	return c
}

// Busy implements hub.CallEvents: the attempt is logged and counted as a call whose outcome is busy.
func (l *Log) Busy(caller, callee string, echo bool) {
	kind := kindOf(echo)
	l.m.calls[kind][OutcomeBusy].Inc()
	l.enqueue(l.now(), slog.LevelInfo, "call ended", slog.String("call", newID()), slog.String("node", l.node),
		slog.String("kind", kind), slog.String("caller", l.name(caller)), slog.String("callee", l.name(callee)),
		slog.String("outcome", OutcomeBusy))
}

// call is one call's record.
type call struct {
	log            *Log
	id, kind       string
	caller, callee string
	started        time.Time

	mu       sync.Mutex
	answered time.Time // zero until answered
	ended    time.Time // zero until ended
	by       string    // who ended it: "caller", "callee" or "server"
	reason   string
	reports  [2]int // quality reports taken from the caller, the callee
	sides    [2]sideReport
	path     string // from the first report that says how the call connected
	proto    string
	failed   bool // a client reported that ICE failed, and none that it connected
	conn     bool // a client reported that the call connected
}

// sideReport is what one party last reported.
type sideReport struct {
	ice, rtt time.Duration // negative: not reported
	loss     float64       // negative: not reported
	iceSeen  bool          // its ICE time is in the histogram
}

func (c *call) who() []slog.Attr {
	return []slog.Attr{slog.String("call", c.id), slog.String("node", c.log.node), slog.String("kind", c.kind),
		slog.String("caller", c.log.name(c.caller)), slog.String("callee", c.log.name(c.callee))}
}

// Answered implements hub.Call.
func (c *call) Answered() {
	now := c.log.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.answered.IsZero() || !c.ended.IsZero() {
		return
	}
	c.answered = now
	setup := now.Sub(c.started)
	c.log.m.setup[c.kind].Observe(setup.Seconds())
	c.log.enqueue(now, slog.LevelInfo, "call set up", append(c.who(), slog.Int64("setup_ms", setup.Milliseconds()))...)
}

// Ended implements hub.Call.
func (c *call) Ended(by, reason string) {
	now := c.log.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended.IsZero() {
		return
	}
	c.ended, c.reason = now, reason
	switch by {
	case "":
		c.by = "server"
	case c.caller:
		c.by = "caller"
	default:
		c.by = "callee"
	}
	outcome := c.outcomeLocked()
	m := c.log.m
	m.active[c.kind].Dec()
	m.calls[c.kind][outcome].Inc()
	attrs := append(c.who(), slog.String("outcome", outcome), slog.String("reason", reason), slog.String("by", c.by))
	if !c.answered.IsZero() {
		d := now.Sub(c.answered)
		m.duration[c.kind].Observe(d.Seconds())
		attrs = append(attrs, slog.Int64("setup_ms", c.answered.Sub(c.started).Milliseconds()),
			slog.Float64("duration_s", roundTo(d.Seconds(), 0.1)))
	} else {
		attrs = append(attrs, slog.Float64("rang_s", roundTo(now.Sub(c.started).Seconds(), 0.1)))
	}
	attrs = append(attrs, c.qualityAttrsLocked()...)
	c.log.enqueue(now, slog.LevelInfo, "call ended", attrs...)
}

// outcomeLocked says how the call went (the Outcome constants), once it ended.
func (c *call) outcomeLocked() string {
	if !c.answered.IsZero() {
		if c.failed && !c.conn {
			return OutcomeFailed
		}
		return OutcomeAnswered
	}
	switch c.reason {
	case protocol.ReasonDeclined:
		return OutcomeDeclined
	case protocol.ReasonNoAnswer:
		return OutcomeNoAnswer
	case protocol.ReasonCancelled:
		return OutcomeCancelled
	case protocol.ReasonHangup: // the tutorial's client declines with a plain leave
		if c.by == "callee" {
			return OutcomeDeclined
		}
		return OutcomeCancelled
	case protocol.ReasonDisconnected, protocol.ReasonRenamed:
		if c.by == "caller" { // the caller closed the page, or took another name, while it rang
			return OutcomeCancelled
		}
	}
	return OutcomeFailed
}

// qualityAttrsLocked is what the parties reported, for the "call ended" line.
func (c *call) qualityAttrsLocked() []slog.Attr {
	var attrs []slog.Attr
	if c.path != "" {
		attrs = append(attrs, slog.String("path", c.path))
	}
	if c.proto != "" {
		attrs = append(attrs, slog.String("transport", c.proto))
	}
	for i, side := range []string{"caller", "callee"} {
		r := c.sides[i]
		if c.reports[i] == 0 {
			continue
		}
		if r.ice >= 0 {
			attrs = append(attrs, slog.Int64(side+"_ice_ms", r.ice.Milliseconds()))
		}
		if r.rtt >= 0 {
			attrs = append(attrs, slog.Int64(side+"_rtt_ms", r.rtt.Milliseconds()))
		}
		if r.loss >= 0 {
			attrs = append(attrs, slog.Float64(side+"_loss_pct", roundTo(100*r.loss, 0.01)))
		}
	}
	return attrs
}

// Report implements hub.Call: it checks that the report is about this call and within its bounds, and counts it.
func (c *call) Report(by, peer string, q protocol.Quality) error {
	now := c.log.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	side := -1
	switch {
	case by == c.caller && peer == c.callee:
		side = 0
	case by == c.callee && peer == c.caller:
		side = 1
	}
	if side < 0 || (!c.ended.IsZero() && now.Sub(c.ended) > ReportGrace) {
		return &hub.ReportError{Code: protocol.CodeNotInCall, Message: "no call with " + peer + " to report on: " +
			"a quality report is about the call you are in, or have left within the last minute"}
	}
	if c.reports[side] >= MaxReports {
		return &hub.ReportError{Code: protocol.CodeRateLimited, Message: fmt.Sprintf(
			"too many quality reports about this call: at most %d (this one was not counted)", MaxReports)}
	}
	c.reports[side]++
	m := c.log.m
	m.reports[q.Phase].Inc()
	r := &c.sides[side]
	if c.reports[side] == 1 {
		r.ice, r.rtt, r.loss = -1, -1, -1
	}
	switch q.Phase {
	case protocol.QualityFailed:
		c.failed = true
	default:
		if !c.conn {
			// The call is counted by the first report that says how it connected: both parties see the same pair.
			c.conn, c.path, c.proto = true, q.Path, q.Transport
			transport := q.Transport
			if transport == "" {
				transport = "unknown"
			}
			m.connected[c.kind][q.Path][transport].Inc()
		}
	}
	if q.ICE >= 0 {
		r.ice = q.ICE
		if !r.iceSeen && q.Phase == protocol.QualityConnected {
			r.iceSeen = true
			m.ice[c.kind].Observe(q.ICE.Seconds())
		}
	}
	if q.RTT >= 0 {
		r.rtt = q.RTT
		m.rtt[c.kind].Observe(q.RTT.Seconds())
	}
	if q.Loss >= 0 {
		r.loss = q.Loss
		m.loss[c.kind].Observe(q.Loss)
	}
	return nil
}

// roundTo rounds v to a multiple of step (0.1, 0.01), so that the line shows 12.3, not 12.300000000000001.
func roundTo(v, step float64) float64 {
	return math.Round(v/step) / math.Round(1/step)
}
