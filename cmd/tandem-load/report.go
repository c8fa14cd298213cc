package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// print writes the report for a person.
func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "scenario %s against %s", r.Scenario, r.URL)
	if r.Users > 0 {
		fmt.Fprintf(w, ": %d users", r.Users)
	}
	if r.Online > 0 {
		fmt.Fprintf(w, " (and %d idle users online)", r.Online)
	}
	if r.Concurrency > 0 {
		fmt.Fprintf(w, ", %d at a time", r.Concurrency)
	}
	if r.Churn != nil {
		fmt.Fprintf(w, ", %.0f episodes a second", r.TargetRate)
	} else if r.Presence != nil {
		fmt.Fprintf(w, ", %.0f changes a second", r.TargetRate)
	} else if r.TargetRate > 0 {
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
	case "churn":
		r.Churn.print(w)
	case "presence":
		unit = "changes"
		r.Presence.print(w)
	case "list":
		unit = "answers"
		if r.List != nil {
			r.List.print(w)
		}
	}
	if l := r.Latency; l.Count > 0 {
		fmt.Fprintf(w, "  latency ms   p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n",
			l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	}
	if (r.Errors > 0 || r.Stalled > 0) && r.Churn == nil {
		fmt.Fprintf(w, "  errors       %d error messages, %d stalled pairs\n", r.Errors, r.Stalled)
		if r.Stalled > 0 {
			fmt.Fprintf(w, "  warning      a pair stalls when the server refuses one of its messages (a rate limit?)\n")
		}
	}
	if r.ServerPID > 0 && r.ServerCPU > 0 {
		if len(r.Processes) > 1 {
			each := make([]string, len(r.Processes))
			for i, p := range r.Processes {
				each[i] = fmt.Sprintf("%d: %.2f s", p.PID, p.CPU)
			}
			fmt.Fprintf(w, "  server CPU   %.2f s (pids %s)", r.ServerCPU, strings.Join(each, ", "))
		} else {
			fmt.Fprintf(w, "  server CPU   %.2f s (pid %d)", r.ServerCPU, r.ServerPID)
		}
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
	if done := max(r.MessageRate, r.SetupRate); r.TargetRate > 0 && r.Churn == nil && r.Presence == nil && done < 0.95*r.TargetRate {
		fmt.Fprintf(w, "  warning      %.0f/s is short of the %.0f/s asked for: the server or this generator cannot keep up\n", done, r.TargetRate)
	}
	if r.ServerWarning != "" {
		fmt.Fprintf(w, "  warning      %s\n", r.ServerWarning)
	}
}

// print writes the churn scenario's figures.
func (c *ChurnReport) print(w io.Writer) {
	fmt.Fprintf(w, "  episodes     %d (%.1f a second), %d failed, %d skipped (-concurrency reached); %d connections opened\n",
		c.Episodes, c.Achieved, c.Failed, c.Skipped, c.Connections)
	kinds := make([]string, 0, len(c.ByKind))
	for k := range c.ByKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		e := c.ByKind[k]
		fmt.Fprintf(w, "    %-16s %6d runs, %d failed\n", k, e.Runs, e.Failed)
		for _, f := range e.Failures {
			fmt.Fprintf(w, "      %s\n", f)
		}
	}
	if c.ServerGone != "" {
		fmt.Fprintf(w, "  stopped      early: %s\n", c.ServerGone)
	}
	mib := func(v float64) float64 { return v / (1 << 20) }
	if len(c.Timeline) > 0 {
		fmt.Fprintf(w, "  timeline     seconds, episodes, failed: descriptors, goroutines, users online, connections, heap MiB, RSS MiB\n")
		for _, s := range c.Timeline {
			v := s.Server
			fmt.Fprintf(w, "    %5.0f %7d %6d: %6.0f %6.0f %6.0f %6.0f %7.1f %7.1f\n", s.Seconds, s.Episodes, s.Failed,
				v.OpenFDs, v.Goroutines, v.UsersOnline, v.Connections, mib(v.HeapInuse), mib(v.RSS))
		}
	}
	if c.After.OpenFDs < 0 {
		fmt.Fprintf(w, "  server       before: %s; after: no answer\n", c.Before)
	} else {
		c.printDiff(w)
	}
	if len(c.Leaks) == 0 {
		fmt.Fprintf(w, "  verdict      back where it started\n")
		return
	}
	fmt.Fprintf(w, "  verdict      NOT back where it started:\n")
	for _, l := range c.Leaks {
		fmt.Fprintf(w, "    %s\n", l)
	}
}

// printDiff writes the server's figures before and after.
func (c *ChurnReport) printDiff(w io.Writer) {
	b, a := c.Before, c.After
	mib := func(v float64) float64 { return v / (1 << 20) }
	fmt.Fprintf(w, "  server       before → after (%.1f s after the last connection closed)\n", c.SettleSeconds)
	fmt.Fprintf(w, "    open descriptors  %8.0f → %-8.0f %+.0f\n", b.OpenFDs, a.OpenFDs, a.OpenFDs-b.OpenFDs)
	fmt.Fprintf(w, "    goroutines        %8.0f → %-8.0f %+.0f\n", b.Goroutines, a.Goroutines, a.Goroutines-b.Goroutines)
	fmt.Fprintf(w, "    users online      %8.0f → %-8.0f %+.0f\n", b.UsersOnline, a.UsersOnline, a.UsersOnline-b.UsersOnline)
	fmt.Fprintf(w, "    connections       %8.0f → %-8.0f %+.0f\n", b.Connections, a.Connections, a.Connections-b.Connections)
	fmt.Fprintf(w, "    heap in use MiB   %8.1f → %-8.1f %+.1f\n", mib(b.HeapInuse), mib(a.HeapInuse), mib(a.HeapInuse-b.HeapInuse))
	fmt.Fprintf(w, "    resident MiB      %8.1f → %-8.1f %+.1f (at most +%.0f allowed for memory)\n", mib(b.RSS), mib(a.RSS),
		mib(a.RSS-b.RSS), mib(c.MemoryTolerance))
}

// verdict is the run's outcome for the exit status: the churn scenario fails when the server answered
// something unexpected or did not get back to where it started.
func (r *Result) verdict() error {
	c := r.Churn
	if c == nil {
		return nil
	}
	var problems []string
	if c.Failed > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d episodes got answers they did not expect", c.Failed, c.Episodes))
	}
	if len(c.Leaks) > 0 {
		problems = append(problems, "the server is not back where it started: "+strings.Join(c.Leaks, "; "))
	}
	if problems == nil {
		return nil
	}
	return errors.New(strings.Join(problems, "; and "))
}
