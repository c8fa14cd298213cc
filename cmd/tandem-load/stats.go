package main

import (
	"slices"
	"time"
)

// latencies collects round-trip or one-way times; each worker has its own, merged at the end.
type latencies []time.Duration

// Summary is a distribution of latencies in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(all []latencies) Summary {
	var n int
	for _, l := range all {
		n += len(l)
	}
	if n == 0 {
		return Summary{}
	}
	merged := make([]time.Duration, 0, n)
	for _, l := range all {
		merged = append(merged, l...)
	}
	slices.Sort(merged)
	var sum time.Duration
	for _, d := range merged {
		sum += d
	}
	at := func(q float64) float64 { return ms(merged[min(int(q*float64(n)), n-1)]) }
	return Summary{
		Count: n,
		Mean:  ms(sum / time.Duration(n)),
		P50:   at(0.50),
		P90:   at(0.90),
		P99:   at(0.99),
		P999:  at(0.999),
		Max:   ms(merged[n-1]),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
