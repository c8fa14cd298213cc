package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem/internal/servertest"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestMetricsAddr runs tandem with -metrics-addr: /metrics and the profiler move to that listener (without the
// profiler's cmdline, which would show secrets given as flags), the public port keeps /healthz and /readyz only,
// and while tandem drains its connections at shutdown /readyz on the metrics listener says 503.
func TestMetricsAddr(t *testing.T) {
	args := []string{"-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", "-turn-addr", "off", "-echo=false",
		"-data-dir", t.TempDir(), "-log-level", "error", "-shutdown-timeout", "10s"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(string) string { return "" }, out, logs) }()
	var main, ops string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m := regexp.MustCompile(`open http://(\S+)/`).FindStringSubmatch(out.String())
		o := regexp.MustCompile(`profiler on http://(\S+)/ `).FindStringSubmatch(out.String())
		if m != nil && o != nil {
			main, ops = "http://"+strings.Replace(m[1], "localhost", "127.0.0.1", 1), "http://"+o[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tandem printed:\n%s\nlogged:\n%s", out, logs)
		}
	}
	for _, c := range []struct {
		url, want string
		code      int
	}{
		{main + "/metrics", "", http.StatusNotFound},
		{main + "/healthz", "ok\n", http.StatusOK},
		{main + "/readyz", "ready\n", http.StatusOK},
		{ops + "/metrics", "tandem_build_info{", http.StatusOK},
		{ops + "/healthz", "ok\n", http.StatusOK},
		{ops + "/readyz", "ready\n", http.StatusOK},
		{ops + "/debug/pprof/", "goroutine", http.StatusOK},
		{ops + "/debug/pprof/cmdline", "", http.StatusNotFound},
	} {
		code, body := httpGet(t, c.url)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d %.200q, want %d with %q", c.url, code, body, c.code, c.want)
		}
	}

	// A user who never reads holds the shutdown up (its close handshake goes unanswered) for a few seconds:
	// meanwhile tandem is alive but not ready.
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer lcancel()
	servertest.Login(t, lctx, "ws"+strings.TrimPrefix(main, "http")+"/", "alice", nil)
	cancel()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		code, body := httpGet(t, ops+"/readyz")
		if code == http.StatusServiceUnavailable && body == "not ready: shutting down\n" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("tandem stopped (%v) before /readyz said it was shutting down", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz while shutting down: %d %q", code, body)
		}
	}
	if code, _ := httpGet(t, ops+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while shutting down: %d", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
