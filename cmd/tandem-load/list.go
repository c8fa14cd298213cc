package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"tandem/client"
)

// ListReport is the list scenario's figures: how fast the online list and a prefix search were answered, and
// what they said.
type ListReport struct {
	Lists         int64   `json:"lists"`          // full lists answered (the first page of everybody)
	Searches      int64   `json:"searches"`       // prefix searches answered
	Refused       int64   `json:"refused"`        // requests answered with an error
	Total         int     `json:"total"`          // users online, as the last full list said
	TotalMin      int     `json:"total_min"`      // the smallest total any answer gave
	Page          int     `json:"page"`           // users in the last full list's page
	Found         int     `json:"found"`          // users in the last search's page
	FoundMore     bool    `json:"found_more"`     // whether the search was cut
	Query         string  `json:"query"`          // the prefix searched
	SearchLatency Summary `json:"search_latency"` // request to answer, searches (Result.Latency has the full lists)
}

// list measures the online list: one user on each server asks, one request at a time, alternately for the
// first page of everybody and for the names starting with -query, for -duration.
func (g *generator) list(ctx context.Context, res *Result) error {
	res.Users = len(g.cfg.urls)
	names := g.names("list", len(g.cfg.urls))
	users := make([]*client.Client, len(names))
	for i, name := range names {
		c, err := g.dialTo(ctx, g.cfg.urls[i], name)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", name, g.cfg.urls[i], err)
		}
		users[i] = c
	}
	rep := &ListReport{Query: g.cfg.query, TotalMin: -1}
	lists, searches := make([]latencies, len(users)), make([]latencies, len(users))
	var mu sync.Mutex
	var firstErr error
	meter := startCPU(g.cfg.pids...)
	end := time.Now().Add(g.cfg.duration)
	var wg sync.WaitGroup
	for i, c := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(end) && ctx.Err() == nil; n++ {
				query := ""
				if n%2 == 1 {
					query = g.cfg.query
				}
				t0 := time.Now()
				m, err := askUsers(ctx, c, query)
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
					return
				}
				d := time.Since(t0)
				mu.Lock()
				switch {
				case m.Type != "users":
					rep.Refused++
				case query == "":
					lists[i] = append(lists[i], d)
					rep.Lists++
					rep.Total, rep.Page = m.Total, len(m.Users)
				default:
					searches[i] = append(searches[i], d)
					rep.Searches++
					rep.Found, rep.FoundMore = len(m.Users), m.More
				}
				if m.Type == "users" && (rep.TotalMin < 0 || m.Total < rep.TotalMin) {
					rep.TotalMin = m.Total
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	meter.stop(res, rep.Lists+rep.Searches)
	res.Latency = summarize(lists)
	rep.SearchLatency = summarize(searches)
	res.List = rep
	return nil
}

// askUsers asks c for the users whose names start with query and returns the answer (or the error message).
func askUsers(ctx context.Context, c *client.Client, query string) (*client.Message, error) {
	if err := c.SendUsers(ctx, query, 0); err != nil {
		return nil, err
	}
	return c.WaitFor(ctx, "users")
}

// cmpOr returns the first of a and b that is not nil.
func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// print writes the list scenario's figures.
func (l *ListReport) print(w io.Writer) {
	fmt.Fprintf(w, "  lists        %d full lists (%d users online, %d in the first page), %d searches for %q (%d found, cut: %v), %d refused\n",
		l.Lists, l.Total, l.Page, l.Searches, l.Query, l.Found, l.FoundMore, l.Refused)
	if s := l.SearchLatency; s.Count > 0 {
		fmt.Fprintf(w, "  search ms    p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n",
			s.P50, s.P90, s.P99, s.P999, s.Max, s.Mean)
	}
}
