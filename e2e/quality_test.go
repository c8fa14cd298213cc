package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// series returns the value of one series of a metric in reg: the one whose labels include all of labels.
func series(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == k && lp.GetValue() == v)
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// waitSeries waits until series(...) is want.
func waitSeries(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for series(t, reg, name, labels) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, series(t, reg, name, labels), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQualityReports: the web client tells the server how its call connected. Two browsers forced through the
// TURN relay call each other: once connected, each reports (path relay, its ICE time), the server counts
// the call as relayed, and after the hang-up both send their last report, which the "call ended" line carries.
func TestQualityReports(t *testing.T) {
	requireBrowser(t)
	srv, reg := startTandemWithTURN(t)
	alice := openTandem(t, srv, "alice", "", withScript(forceRelayJS))
	bob := openTandem(t, srv, "bob", "", withScript(forceRelayJS))
	connect(t, alice, bob)

	waitSeries(t, reg, "tandem_call_quality_reports_total", map[string]string{"phase": "connected"}, 2)
	// Chromium allocates relays over UDP and TCP alike, and either may carry the call.
	if got := series(t, reg, "tandem_calls_connected_total", map[string]string{"path": "relay", "transport": "udp"}) +
		series(t, reg, "tandem_calls_connected_total", map[string]string{"path": "relay", "transport": "tcp"}); got != 1 {
		t.Errorf("calls connected through the relay over UDP or TCP: %v, want 1", got)
	}
	if got := series(t, reg, "tandem_calls_connected_total", nil); got != 1 {
		t.Errorf("calls connected: %v, want 1", got)
	}
	if got := series(t, reg, "tandem_call_ice_seconds", nil); got != 2 {
		t.Errorf("ICE times: %v, want one from each browser", got)
	}

	alice.click("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")
	waitSeries(t, reg, "tandem_call_quality_reports_total", map[string]string{"phase": "ended"}, 2)
	if got := series(t, reg, "tandem_calls_total", map[string]string{"outcome": "answered"}); got != 1 {
		t.Errorf("answered calls: %v, want 1", got)
	}
	if got := series(t, reg, "tandem_errors_total", nil); got != 0 {
		t.Errorf("%v errors answered to the browsers", got)
	}
	var ended string
	for _, l := range strings.Split(srv.logs.String(), "\n") {
		if strings.Contains(l, `msg="call ended"`) {
			ended = l
		}
	}
	t.Logf("%s", ended)
	for _, want := range []string{"caller=alice", "callee=bob", "outcome=answered", "by=caller", "path=relay"} {
		if !strings.Contains(ended, " "+want) {
			t.Errorf("the call ended line has no %s: %q", want, ended)
		}
	}
	if !regexp.MustCompile(` transport=(udp|tcp) `).MatchString(ended) {
		t.Errorf("no transport in %q", ended)
	}
	for _, side := range []string{"caller", "callee"} {
		if !regexp.MustCompile(fmt.Sprintf(` %s_ice_ms=\d+ `, side)).MatchString(ended) {
			t.Errorf("no %s_ice_ms in %q", side, ended)
		}
	}
}
