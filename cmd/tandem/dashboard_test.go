package main

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"tandem/internal/servertest"
	"tandem/internal/version"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

// dashboardQueries returns every PromQL query of the Grafana dashboard at path: the panels' targets and the
// template variables' queries.
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			ID      int
			Type    string
			Title   string
			Targets []struct {
				Expr  string
				RefID string
			}
		}
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var queries []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.Title == "" {
			t.Errorf("panel %d %q: a repeated id or no title", p.ID, p.Title)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, q := range p.Targets {
			if q.Expr == "" || q.RefID == "" {
				t.Errorf("panel %q: a target without expr or refId", p.Title)
			}
			queries = append(queries, q.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil || q.Query == "" {
				t.Errorf("variable %s: query %s", v.Name, v.Query)
			}
			queries = append(queries, q.Query)
		}
	}
	return queries
}

// TestDashboardMetrics: every metric the Grafana dashboard (deploy/grafana/tandem.json) queries is in /metrics of
// a real tandem (TURN, echo, -metrics-addr) that has carried a real call between two pion peers, which reported
// its quality; /metrics also says which version runs, as the start line does.
func TestDashboardMetrics(t *testing.T) {
	queries := dashboardQueries(t, "../../deploy/grafana/tandem.json")
	metricName := regexp.MustCompile(`\b(?:tandem|go|process)_[a-zA-Z0-9_]+`)
	selector := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
	queried := map[string]bool{}
	for _, q := range queries {
		for _, m := range metricName.FindAllString(q, -1) {
			queried[m] = true
		}
		for _, m := range selector.FindAllStringSubmatch(q, -1) {
			if !queried[m[1]] {
				t.Errorf("%q queries %s, which is not one of tandem's metrics", q, m[1])
			}
		}
	}
	if len(queried) < 25 {
		t.Fatalf("the dashboard queries only %d metrics: %v", len(queried), queried)
	}

	out, logs, _ := runTandem(t, "-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", "-turn-addr", "127.0.0.1:0",
		"-turn-allow-loopback", "-data-dir", t.TempDir(), "-log-level", "info", "-node-id", "dashboard-test")
	ops := regexp.MustCompile(`profiler on (http://\S+)/ `).FindStringSubmatch(out.String())
	if ops == nil {
		t.Fatalf("no metrics address in:\n%s", out)
	}
	url := wsURL(t, out.String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	alice, err := webrtctest.NewPeer(ctx, api, url, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := webrtctest.NewPeer(ctx, api, url, "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	began := time.Now()
	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*webrtctest.Peer{alice, bob} {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	report := alice.QualityReport(protocol.QualityEnded, time.Since(began))
	if err := alice.C.Send(ctx, map[string]any{"type": protocol.TypeQuality, "name": "bob", "quality": report}); err != nil {
		t.Fatal(err)
	}
	if err := alice.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	var metrics map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		metrics = servertest.Metrics(t, ops[1]+"/metrics")
		if metrics[`tandem_calls_total{kind="person",outcome="answered"}`] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the call was not counted: %v", metrics)
		}
	}
	if metrics[`tandem_calls_connected_total{kind="person",path="direct",transport="udp"}`] != 1 {
		t.Errorf("the quality report was not counted")
	}
	names := map[string]bool{}
	for series := range metrics {
		name, _, _ := strings.Cut(series, "{")
		names[name] = true
	}
	var missing []string
	for m := range queried {
		if !names[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics that /metrics does not have: %v", missing)
	}

	v := version.String()
	found := false
	for series, val := range metrics {
		if strings.HasPrefix(series, "tandem_build_info{") && strings.Contains(series, `version="`+v+`"`) && val == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("no tandem_build_info with version %q", v)
	}
	if !strings.Contains(logs.String(), `msg="tandem is listening"`) || !strings.Contains(logs.String(), "version="+v) {
		t.Errorf("the start line does not give the version %q:\n%s", v, logs)
	}
	for _, want := range []string{`msg="call set up"`, `msg="call ended"`, "node=dashboard-test", "outcome=answered"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %s in the log", want)
		}
	}
}
