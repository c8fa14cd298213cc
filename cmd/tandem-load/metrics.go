package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// serverGauges are the figures of a server's /metrics that the churn scenario compares before and after: what a
// stranger's connections could make the server hold. -1 means the server did not report it.
type serverGauges struct {
	OpenFDs     float64 `json:"process_open_fds"`
	Goroutines  float64 `json:"go_goroutines"`
	HeapInuse   float64 `json:"go_memstats_heap_inuse_bytes"`
	RSS         float64 `json:"process_resident_memory_bytes"`
	UsersOnline float64 `json:"tandem_users_online"`
	Connections float64 `json:"tandem_connections"`
}

// fields maps the metric names to the fields they fill.
func (s *serverGauges) fields() map[string]*float64 {
	return map[string]*float64{
		"process_open_fds":              &s.OpenFDs,
		"go_goroutines":                 &s.Goroutines,
		"go_memstats_heap_inuse_bytes":  &s.HeapInuse,
		"process_resident_memory_bytes": &s.RSS,
		"tandem_users_online":           &s.UsersOnline,
		"tandem_connections":            &s.Connections,
	}
}

// metricsURL is the /metrics address of the server whose WebSocket is at wsURL: the same host and port.
func metricsURL(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", fmt.Errorf("-url: %w", err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("-url must be ws:// or wss://, not %q", wsURL)
	}
	u.Path, u.RawQuery, u.Fragment = "/metrics", "", ""
	return u.String(), nil
}

// scraper reads a server's /metrics. Each read is its own connection, closed after the answer, so that the
// server holds the same one connection (the scraper's) during every read.
type scraper struct {
	url string
	hc  *http.Client
}

func newScraper(wsURL string) (*scraper, error) {
	u, err := metricsURL(wsURL)
	if err != nil {
		return nil, err
	}
	return &scraper{url: u, hc: &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		Timeout:   10 * time.Second,
	}}, nil
}

func (s *scraper) read(ctx context.Context) (serverGauges, error) {
	g := serverGauges{-1, -1, -1, -1, -1, -1}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return g, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return g, fmt.Errorf("reading the server's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return g, fmt.Errorf("reading the server's metrics: %s answered %s", s.url, resp.Status)
	}
	if err := parseGauges(resp.Body, &g); err != nil {
		return g, fmt.Errorf("reading the server's metrics: %w", err)
	}
	return g, nil
}

// parseGauges fills g from the Prometheus text format in r: the unlabelled samples it knows.
func parseGauges(r io.Reader, g *serverGauges) error {
	fields := g.fields()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, known := fields[name]
		if !known {
			continue
		}
		if i := strings.IndexByte(value, ' '); i >= 0 { // a timestamp follows
			value = value[:i]
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*f = v
	}
	return sc.Err()
}

// leaks lists what in after is not back to before: descriptors, goroutines, users online and connections
// exactly (fewer users or connections than before is a fault too: somebody was cut off), memory within
// tolerance bytes.
func leaks(before, after serverGauges, tolerance float64) []string {
	var out []string
	more := func(what string, b, a float64) {
		if b >= 0 && a > b {
			out = append(out, fmt.Sprintf("%s %.0f, was %.0f (+%.0f)", what, a, b, a-b))
		}
	}
	differ := func(what string, b, a float64) {
		if b >= 0 && a != b {
			out = append(out, fmt.Sprintf("%s %.0f, was %.0f (%+.0f)", what, a, b, a-b))
		}
	}
	more("open descriptors", before.OpenFDs, after.OpenFDs)
	more("goroutines", before.Goroutines, after.Goroutines)
	differ("users online", before.UsersOnline, after.UsersOnline)
	differ("connections", before.Connections, after.Connections)
	if out != nil {
		return out // memory is only judged once everything else is back
	}
	mib := func(b float64) float64 { return b / (1 << 20) }
	for _, m := range []struct {
		what string
		b, a float64
	}{{"heap in use", before.HeapInuse, after.HeapInuse}, {"resident memory", before.RSS, after.RSS}} {
		if m.b >= 0 && m.a-m.b > tolerance {
			out = append(out, fmt.Sprintf("%s %.1f MiB, was %.1f MiB (+%.1f MiB, more than the %.0f MiB allowed)",
				m.what, mib(m.a), mib(m.b), mib(m.a-m.b), mib(tolerance)))
		}
	}
	return out
}

// missing names the gauges the server did not report.
func (s serverGauges) missing() []string {
	var out []string
	for name, f := range s.fields() {
		if *f < 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (s serverGauges) String() string {
	return fmt.Sprintf("%.0f descriptors, %.0f goroutines, %.0f users online, %.0f connections, heap in use %.1f MiB, RSS %.1f MiB",
		s.OpenFDs, s.Goroutines, s.UsersOnline, s.Connections, s.HeapInuse/(1<<20), s.RSS/(1<<20))
}
