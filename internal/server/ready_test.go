package server_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"tandem/internal/server"
	"tandem/internal/servertest"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
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

// TestReadiness: /readyz is separate from /healthz (liveness): it says 503 before the server serves, after it
// begins to shut down, and while a readiness check fails, with the reason; /healthz says ok throughout.
func TestReadiness(t *testing.T) {
	srv, err := server.New(server.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.Handler(), "/readyz"); code != http.StatusServiceUnavailable || body != "not ready: not serving yet\n" {
		t.Errorf("before Serve: %d %q", code, body)
	}
	if code, body := get(t, srv.Handler(), "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz before Serve: %d %q", code, body)
	}
	ts := servertest.Serve(t, srv, nil)
	if code, body := getURL(t, ts.HTTP()+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("serving: %d %q", code, body)
	}
	var down atomic.Bool
	down.Store(true)
	srv.AddReadinessCheck("backplane", func() error {
		if down.Load() {
			return errors.New("no connection to 127.0.0.1:6379")
		}
		return nil
	})
	if code, body := getURL(t, ts.HTTP()+"/readyz"); code != http.StatusServiceUnavailable || body != "not ready: backplane: no connection to 127.0.0.1:6379\n" {
		t.Errorf("a check failing: %d %q", code, body)
	}
	if code, _ := getURL(t, ts.HTTP()+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while not ready: %d", code)
	}
	down.Store(false)
	if code, body := getURL(t, ts.HTTP()+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("the check passing again: %d %q", code, body)
	}
	if err := ts.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []http.Handler{srv.Handler(), srv.OpsHandler()} {
		if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready: shutting down\n" {
			t.Errorf("after shutdown: %d %q", code, body)
		}
	}
}

// TestPrivateMetrics: with PrivateMetrics the main listener has no /metrics; OpsHandler serves it, with
// /healthz and /readyz.
func TestPrivateMetrics(t *testing.T) {
	for _, private := range []bool{false, true} {
		ts := servertest.Start(t, func(c *server.Config) { c.PrivateMetrics = private })
		code, body := getURL(t, ts.HTTP()+"/metrics")
		if private && code != http.StatusNotFound || !private && (code != http.StatusOK || !strings.Contains(body, "tandem_connections")) {
			t.Errorf("private %v: /metrics on the main listener: %d", private, code)
		}
		ops := httptest.NewServer(ts.OpsHandler())
		for path, want := range map[string]string{"/metrics": "tandem_calls_total", "/healthz": "ok", "/readyz": "ready"} {
			if code, body := getURL(t, ops.URL+path); code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("private %v: ops %s: %d %.100q", private, path, code, body)
			}
		}
		ops.Close()
	}
}
