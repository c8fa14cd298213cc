package calllog

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/hub"
	"tandem/protocol"
)

// TestReportGrace: a party may report on its call for ReportGrace after it ended, not after.
func TestReportGrace(t *testing.T) {
	l, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	c := l.Started("alice", "bob", false)
	c.Answered()
	c.Ended("alice", protocol.ReasonHangup)
	q := protocol.Quality{Phase: protocol.QualityEnded, Path: protocol.PathDirect, ICE: -1, RTT: -1, Loss: -1}
	now = now.Add(ReportGrace)
	if err := c.Report("bob", "alice", q); err != nil {
		t.Fatalf("at the end of the grace: %v", err)
	}
	now = now.Add(time.Millisecond)
	var re *hub.ReportError
	if err := c.Report("bob", "alice", q); !errors.As(err, &re) || re.Code != protocol.CodeNotInCall {
		t.Fatalf("after the grace: %v", err)
	}
}

// TestQueueBound: lines that the writer has not taken are held up to QueueLength; more are dropped and counted,
// and the hub is never held up.
func TestQueueBound(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := New(Config{Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range QueueLength + 10 {
		l.Busy("alice", "bob", false)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	dropped := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "tandem_call_log_dropped_total" {
			dropped = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if dropped != 10 {
		t.Errorf("tandem_call_log_dropped_total = %v, want 10", dropped)
	}
	stop := l.Start()
	stop()
	if len(l.lines) != 0 {
		t.Errorf("%d lines left after stop", len(l.lines))
	}
}
