package main

import (
	"os"
	"strconv"
	"testing"
)

// The presence scenario, briefly, against a real server in this process: watchers get pages when the churn
// touches them, the probe's sign-ins reach its watcher, and no change is refused.
func TestPresenceScenario(t *testing.T) {
	url := startServer(t)
	res := runJSON(t, nil, "-url", url, "-pid", strconv.Itoa(os.Getpid()), "-scenario", "presence", "-users", "60",
		"-rate", "50", "-duration", "2s", "-warmup", "0s", "-timeout", "25s")
	p := res.Presence
	if p == nil {
		t.Fatalf("no presence report: %+v", res)
	}
	if p.Watchers != 36 || p.PrefixWatchers != 6 {
		t.Errorf("%d watchers, %d of a prefix; want 36 and 6", p.Watchers, p.PrefixWatchers)
	}
	if p.Changes < 50 || p.Failed != 0 {
		t.Errorf("%d changes, %d refused", p.Changes, p.Failed)
	}
	if p.PagePushes == 0 || p.ProbeLatency.Count < 2 {
		t.Errorf("%d pages pushed, %d probes: the watchers saw nothing", p.PagePushes, p.ProbeLatency.Count)
	}
	if p.CPUPerChangeUS <= 0 || res.MemoryAfter == nil {
		t.Errorf("server CPU per change %.0f µs, memory %+v", p.CPUPerChangeUS, res.MemoryAfter)
	}
}
