package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/servertest"
)

// churn runs tandem-load's churn scenario with args against url and returns its report and the error it exits
// with.
func churn(t *testing.T, url string, args ...string) (*Result, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append([]string{"-url", url, "-scenario", "churn", "-json", "-local-addrs", "127.0.0.1"}, args...)
	err := run(ctx, args, func(string) string { return "" }, &stdout, &stderr)
	var res Result
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil || res.Churn == nil {
		t.Fatalf("tandem-load %s: %v, and no report: %v\n%s\n%s", strings.Join(args, " "), err, jerr, stdout.String(), stderr.String())
	}
	return &res, err
}

// A few seconds of every kind of episode against a real server with tandem's default limits: every answer is the
// one the protocol promises, and once the generator's connections are gone the server holds no more descriptors,
// goroutines, users or connections than before (the server shares this process, so the figures are the test
// process's: the generator's own connections must be gone too).
func TestChurn(t *testing.T) {
	srv := servertest.Start(t, nil)
	res, err := churn(t, srv.URL, "-rate", "150", "-duration", "3s", "-concurrency", "60", "-settle", "10s")
	c := res.Churn
	for name, k := range c.ByKind {
		if k.Runs == 0 {
			t.Errorf("no %s episode ran", name)
		}
		for _, f := range k.Failures {
			t.Errorf("%s: %s", name, f)
		}
	}
	if len(c.ByKind) != len(churnMix) || c.Episodes < 100 || c.Connections < c.Episodes {
		t.Errorf("%d kinds of episode, %d episodes, %d connections", len(c.ByKind), c.Episodes, c.Connections)
	}
	// The pace holds on a busy machine: the episodes whose ticks came late are started when the generator
	// catches up (or counted as skipped at -concurrency), not lost.
	if started := c.Episodes + c.Skipped; started < 0.9*150*3 {
		t.Errorf("%d episodes started or skipped in 3 s at 150 a second", started)
	}
	for _, l := range c.Leaks {
		t.Errorf("not back where it started: %s", l)
	}
	if err != nil {
		t.Errorf("exit: %v", err)
	}
	if srv.Online() != 0 || srv.Connections() != 0 {
		t.Errorf("the server holds %d users and %d connections", srv.Online(), srv.Connections())
	}
}

// A connection that the generator did not open, logged in during the run and still open at the end, is reported
// as not back where it started, and the run fails.
func TestChurnFindsWhatStays(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	held := make(chan *client.Client, 1)
	go func() {
		defer close(held)
		// Wait for the run's first login (after its baseline), then log a user in that stays.
		for logins(t, srv) == 0 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond) // polling the server's counter: it raises no event
		}
		c, err := client.Dial(ctx, srv.URL, nil)
		if err != nil {
			t.Error(err)
			return
		}
		held <- c
		if _, err := c.Login(ctx, "stays", ""); err != nil {
			t.Error(err)
		}
	}()
	res, err := churn(t, srv.URL, "-rate", "50", "-duration", "1s", "-episodes", "login,no-login", "-settle", "1s")
	if c := <-held; c != nil {
		defer c.CloseNow()
	}
	leaks := strings.Join(res.Churn.Leaks, "; ")
	for _, want := range []string{"users online 1, was 0 (+1)", "connections 1, was 0 (+1)", "open descriptors"} {
		if !strings.Contains(leaks, want) {
			t.Errorf("leaks %q do not say %q", leaks, want)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "not back where it started") {
		t.Errorf("exit: %v", err)
	}
	if res.Churn.Failed != 0 || res.Churn.ByKind["login"].Runs == 0 || res.Churn.ByKind["no-login"].Runs == 0 {
		t.Errorf("got %+v", res.Churn)
	}
}

// logins reads the server's count of successful logins.
func logins(t *testing.T, srv *servertest.Server) float64 {
	mfs, err := srv.Registry().Gather()
	if err != nil {
		t.Error(err)
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "tandem_logins_total" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Error("no tandem_logins_total")
	return 0
}

func TestChurnFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "churn", "-episodes", "login,fly"},
		{"-scenario", "churn", "-settle", "1m"},
		{"-scenario", "churn", "-duration", "10m"}, // longer than -timeout
		{"-scenario", "churn", "-rate", "5000"},
		{"-scenario", "churn", "-memory-tolerance", "-1"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, &out); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestParseGauges(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
go_memstats_heap_inuse_bytes 2.6624e+06
process_open_fds 15 1712345678000
tandem_errors_total{code="busy"} 3
tandem_users_online 1
`
	g := serverGauges{-1, -1, -1, -1, -1, -1}
	if err := parseGauges(strings.NewReader(text), &g); err != nil {
		t.Fatal(err)
	}
	want := serverGauges{OpenFDs: 15, Goroutines: 12, HeapInuse: 2662400, RSS: -1, UsersOnline: 1, Connections: -1}
	if g != want {
		t.Errorf("got %+v, want %+v", g, want)
	}
	if m := g.missing(); strings.Join(m, ",") != "process_resident_memory_bytes,tandem_connections" {
		t.Errorf("missing %v", m)
	}
}
