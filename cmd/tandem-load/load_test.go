package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/internal/server"
	"tandem/internal/servertest"
)

// startServer runs a tandem server in the test process on a loopback port, without the per-connection rate
// limit, as in BENCHMARKS.md: pairs relay thousands of messages a second each.
func startServer(t *testing.T) string {
	t.Helper()
	return servertest.Start(t, func(c *server.Config) { c.Rate = 0 }).URL
}

// runJSON runs tandem-load with args (and -json) and decodes its report.
func runJSON(t *testing.T, env map[string]string, args ...string) *Result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, append(args, "-json"), func(k string) string { return env[k] }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("tandem-load %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("report: %v\n%s", err, stdout.String())
	}
	return &res
}

// The scenarios run briefly against a real server in this process (its CPU time and memory are this process's)
// without a rate limit.
func TestScenarios(t *testing.T) {
	url := startServer(t)
	pid := strconv.Itoa(os.Getpid())
	common := []string{"-url", url, "-pid", pid, "-warmup", "100ms", "-timeout", "20s"}

	t.Run("relay", func(t *testing.T) {
		res := runJSON(t, nil, append(common, "-scenario", "relay", "-users", "10", "-duration", "1s")...)
		if res.Messages == 0 || res.MessageRate <= 0 || res.Latency.Count != int(res.Messages) {
			t.Errorf("relayed %d messages at %.0f/s with %d latencies", res.Messages, res.MessageRate, res.Latency.Count)
		}
		if res.Errors != 0 || res.Stalled != 0 {
			t.Errorf("%d errors, %d stalled pairs", res.Errors, res.Stalled)
		}
		if res.ServerCPU <= 0 || res.PerServerCPUSecond <= 0 {
			t.Errorf("server CPU %.3f s, %.0f per CPU-second", res.ServerCPU, res.PerServerCPUSecond)
		}
	})
	t.Run("paced relay", func(t *testing.T) { // a goroutine per pair, where the closed loop has event loops
		res := runJSON(t, nil, append(common, "-scenario", "relay", "-users", "10", "-rate", "200", "-duration", "1s")...)
		if res.Messages == 0 || res.MessageRate > 250 || res.Latency.Count != int(res.Messages) {
			t.Errorf("relayed %d messages at %.0f/s with %d latencies, paced at 200/s", res.Messages, res.MessageRate,
				res.Latency.Count)
		}
		if res.Errors != 0 || res.Stalled != 0 {
			t.Errorf("%d errors, %d stalled pairs", res.Errors, res.Stalled)
		}
	})
	t.Run("setup", func(t *testing.T) {
		res := runJSON(t, nil, append(common, "-scenario", "setup", "-users", "4", "-duration", "500ms", "-online", "5",
			"-rate", "200")...)
		if res.Setups == 0 || res.SetupRate > 250 || res.Errors != 0 || res.Stalled != 0 {
			t.Errorf("%d setups, %d errors, %d stalled pairs", res.Setups, res.Errors, res.Stalled)
		}
	})
	t.Run("login from the environment", func(t *testing.T) {
		env := map[string]string{"TANDEM_LOAD_SCENARIO": "login", "TANDEM_LOAD_USERS": "50", "TANDEM_LOAD_CONCURRENCY": "5"}
		res := runJSON(t, env, common...)
		if res.Scenario != "login" || res.Logins != 50 || res.Latency.Count != 50 || res.Concurrency != 5 {
			t.Errorf("got %+v", res)
		}
	})
	t.Run("idle", func(t *testing.T) {
		res := runJSON(t, nil, append(common, "-scenario", "idle", "-users", "20", "-settle", "10ms",
			"-local-addrs", "127.0.0.1")...)
		if res.Connections != 20 || res.MemoryAfter == nil || res.MemoryAfter.VmRSS <= 0 {
			t.Errorf("got %+v", res)
		}
	})
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "fly"},
		{"-scenario", "relay", "-users", "3"},
		{"-timeout", "1h"},
		{"-rate", "-1"},
		{"-url", "http://127.0.0.1:9090/"},
		{"-scenario", "idle"}, // needs -pid
		{"-pid", "12,x"},
		{"-url", "ws://127.0.0.1:1/,http://127.0.0.1:2/"},
		{"-url", ","},
		{"-scenario", "churn", "-url", "ws://127.0.0.1:1/,ws://127.0.0.1:2/"}, // one server only
		{"-scenario", "list", "-query", ""},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, func(string) string { return "" }, &out, &out)
		if err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestPayloadSizes(t *testing.T) {
	p := newPayloads()
	for _, c := range []struct {
		name     string
		msg      json.RawMessage
		min, max int
	}{
		{"offer", p.offer, 2500, 2900},
		{"answer", p.answer, 2000, 2400},
		{"candidate", p.candidate, 180, 260},
	} {
		if !json.Valid(c.msg) || len(c.msg) < c.min || len(c.msg) > c.max {
			t.Errorf("%s: %d bytes (valid JSON: %v), want %d to %d", c.name, len(c.msg), json.Valid(c.msg), c.min, c.max)
		}
	}
}

// The two ways of reading a process's CPU time agree (the coarse one counts in hundredths of a second).
func TestProcCPU(t *testing.T) {
	pid := os.Getpid()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) { // burn some CPU time
	}
	fine, err := threadsCPU(pid)
	if err != nil {
		t.Skipf("no per-thread run times here: %v", err)
	}
	coarse, err := statCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if diff := (fine - coarse).Abs(); fine < 250*time.Millisecond || diff > 100*time.Millisecond+fine/10 {
		t.Errorf("schedstat says %v, stat says %v", fine, coarse)
	}
}

func TestHasType(t *testing.T) {
	for _, c := range []struct {
		frame string
		typ   string
		want  bool
	}{
		{`{"type":"offer","offer":{}}`, "offer", true},
		{`{"type":"offers"}`, "offer", false},
		{`{"type":"answer"}`, "offer", false},
		{`{"offer":{},"type":"offer"}`, "offer", true},
		{`Hello world`, "offer", false},
	} {
		if got := hasType([]byte(c.frame), c.typ); got != c.want {
			t.Errorf("hasType(%s, %s) = %v", c.frame, c.typ, got)
		}
	}
}
