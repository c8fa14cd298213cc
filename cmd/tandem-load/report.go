package main

import (
	"fmt"
	"io"
)

// print writes the report for a person.
func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "scenario %s against %s: %d users", r.Scenario, r.URL, r.Users)
	if r.Online > 0 {
		fmt.Fprintf(w, " (and %d idle users online)", r.Online)
	}
	if r.Concurrency > 0 {
		fmt.Fprintf(w, ", %d at a time", r.Concurrency)
	}
	if r.TargetRate > 0 {
		fmt.Fprintf(w, ", paced at %.0f/s", r.TargetRate)
	}
	fmt.Fprintf(w, ", %.1f s\n", r.Seconds)
	unit := ""
	switch r.Scenario {
	case "relay":
		unit = "msgs"
		fmt.Fprintf(w, "  relayed      %d messages, %.0f msgs/s\n", r.Messages, r.MessageRate)
	case "setup":
		unit = "setups"
		fmt.Fprintf(w, "  call setups  %d, %.0f setups/s (offer to answer)\n", r.Setups, r.SetupRate)
	case "login":
		unit = "logins"
		fmt.Fprintf(w, "  logins       %d, %.0f logins/s\n", r.Logins, r.LoginRate)
	case "idle":
		fmt.Fprintf(w, "  connections  %d logged in and idle\n", r.Connections)
	}
	if l := r.Latency; l.Count > 0 {
		fmt.Fprintf(w, "  latency ms   p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n",
			l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	}
	if r.Errors > 0 || r.Stalled > 0 {
		fmt.Fprintf(w, "  errors       %d error messages, %d stalled pairs\n", r.Errors, r.Stalled)
		if r.Stalled > 0 {
			fmt.Fprintf(w, "  warning      a pair stalls when the server refuses one of its messages (a rate limit?)\n")
		}
	}
	if r.ServerPID > 0 && r.ServerCPU > 0 {
		fmt.Fprintf(w, "  server CPU   %.2f s (pid %d)", r.ServerCPU, r.ServerPID)
		if unit != "" {
			fmt.Fprintf(w, ", %.0f %s per server CPU-second", r.PerServerCPUSecond, unit)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  load CPU     %.2f s (this generator)\n", r.GeneratorCPU)
	if r.MemoryAfter != nil {
		mb := func(b int64) float64 { return float64(b) / (1 << 20) }
		fmt.Fprintf(w, "  server RSS   %.1f MiB before, %.1f MiB after: %.0f bytes (%.2f KiB) per connection\n",
			mb(r.MemoryBefore.VmRSS), mb(r.MemoryAfter.VmRSS), r.RSSPerConn, r.RSSPerConn/1024)
		if r.PSSPerConn > 0 {
			fmt.Fprintf(w, "  server PSS   %.0f bytes (%.2f KiB) per connection; private dirty %.1f MiB after\n",
				r.PSSPerConn, r.PSSPerConn/1024, mb(r.MemoryAfter.PrivateDirty))
		}
	}
	if done := max(r.MessageRate, r.SetupRate); r.TargetRate > 0 && done < 0.95*r.TargetRate {
		fmt.Fprintf(w, "  warning      %.0f/s is short of the %.0f/s asked for: the server or this generator cannot keep up\n", done, r.TargetRate)
	}
	if r.ServerWarning != "" {
		fmt.Fprintf(w, "  warning      %s\n", r.ServerWarning)
	}
}
