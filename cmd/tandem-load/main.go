// Command tandem-load is tandem's load generator: it plays many users of the tutorial's signaling protocol
// against a server (tandem, the tutorial's own, or any other that speaks it) and measures throughput, latency,
// the server's CPU time per message and its memory per connection. BENCHMARKS.md shows how it is used.
//
// Scenarios:
//
//	relay  -users N: N/2 pairs in a call relay offers, answers and candidates, one message in flight per pair
//	login  -users N -concurrency C: N users connect and log in, C at a time
//	idle   -users N -pid P: N logged-in users do nothing; the server's memory per connection
//	setup  -users N: N/2 pairs set calls up over and over: offer, answer, leave
//	churn  -rate R -duration D: a soak of tandem: logins, renames, resumes, calls, refused messages, abrupt
//	       closes and resets, R episodes a second; then checks that the server is back where it started
//	list   -duration D: one user per server asks for the online list and a prefix search (-query), one request
//	       at a time; the latency of the answers, and the totals they give
//
// relay and setup run a closed loop, as fast as the server answers, or at a fixed total -rate, which compares
// servers' latency and CPU time at the same load.
//
// A cluster (several tandem nodes sharing one Redis) is measured with a comma-separated list of -url: the users
// are spread over the nodes so that the two users of every relay or setup pair are on different nodes (pair i's
// first user on node i, its second on node i+1, modulo the number of nodes), and a comma-separated list of -pid
// (every node, and redis-server) is counted together: the CPU time is the sum of the processes', each one's in the
// JSON report's "processes".
//
// Every run stops by itself: the measurement lasts -duration, and -timeout bounds the whole run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"tandem/internal/cli"
)

func main() {
	cli.Main("tandem-load", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

// maxTimeout is the longest any run may take, whatever -timeout says.
const maxTimeout = 30 * time.Minute

// config is one run's settings.
type config struct {
	url         string   // as given: one URL, or several separated by commas
	urls        []string // the URLs of url
	scenario    string
	users       int
	concurrency int
	online      int
	duration    time.Duration
	warmup      time.Duration
	settle      time.Duration
	timeout     time.Duration
	candidates  int
	rate        float64
	pid         int   // the first of pids (0: none)
	pids        []int // the processes whose CPU time (and memory) are counted together
	json        bool
	prefix      string
	localAddrs  string

	memoryTolerance float64 // churn: bytes the server's heap and RSS may grow
	episodes        string  // churn: the kinds of episode to play, comma-separated ("": all)
	watchShare      float64 // presence: the share of the users that watch the online list
	firstPageShare  float64 // presence: the share of the changes made to users on the list's first page
	query           string  // list: the prefix searched
}

// run is tandem-load: it parses args (each flag may also come from a TANDEM_LOAD_* environment variable), runs
// one scenario and prints its report to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := config{
		url:         "ws://127.0.0.1:9090/",
		scenario:    "relay",
		users:       500,
		concurrency: 100,
		duration:    10 * time.Second,
		warmup:      2 * time.Second,
		settle:      3 * time.Second,
		timeout:     5 * time.Minute,
		candidates:  6,
		prefix:      fmt.Sprintf("load%04x-", rand.N(1<<16)),
	}
	fs := flag.NewFlagSet("tandem-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.url, "url", cfg.url, "WebSocket URL of the server under test (ws:// or wss://); several, comma-separated: the nodes of a cluster, over which the users are spread (each relay or setup pair across two nodes)")
	fs.StringVar(&cfg.scenario, "scenario", cfg.scenario, "relay, login, idle, setup, churn, presence or list")
	fs.IntVar(&cfg.users, "users", cfg.users, "simulated users taking part (relay and setup pair them)")
	fs.IntVar(&cfg.concurrency, "concurrency", cfg.concurrency, "connections opened at once (login storm: logins in progress at once; churn: episodes in progress at once)")
	fs.IntVar(&cfg.online, "online", cfg.online, "extra logged-in users kept idle during the run, to measure under a fuller server")
	fs.DurationVar(&cfg.duration, "duration", cfg.duration, "how long relay and setup are measured, and churn runs")
	fs.DurationVar(&cfg.warmup, "warmup", cfg.warmup, "relay and setup run this long before the measurement starts")
	fs.DurationVar(&cfg.settle, "settle", cfg.settle, "idle: how long the connections sit before the server's memory is read; churn: how long the server may take to get back to where it started (at most 30s)")
	fs.DurationVar(&cfg.timeout, "timeout", cfg.timeout, "the whole run is stopped after this long (at most 30m)")
	fs.IntVar(&cfg.candidates, "candidates", cfg.candidates, "relay: ICE candidates per offer/answer exchange, half each way")
	fs.Float64Var(&cfg.rate, "rate", cfg.rate, "relay: messages a second, setup: setups a second, spread over the pairs (0: closed loop, as fast as the server answers); churn: episodes a second (0: 20)")
	memMiB := 64.0
	fs.StringVar(&cfg.episodes, "episodes", cfg.episodes, "churn: the kinds of episode to play, comma-separated (default all: "+strings.Join(churnKinds(), ",")+")")
	fs.Float64Var(&memMiB, "memory-tolerance", memMiB, "churn: MiB the server's heap in use and resident memory may have grown at the end")
	fs.Float64Var(&cfg.watchShare, "watchers", 0.6, "presence: the share of the users that watch the online list (a sixth of them a name prefix, the rest the first page); 0 for a baseline")
	fs.Float64Var(&cfg.firstPageShare, "first-page-changes", 0.1, "presence: the share of the changes made by users on the list's first page (seen by every first-page watcher)")
	fs.Var((*pidList)(&cfg.pids), "pid", "process id of the server, for its CPU time and memory from /proc (0: not measured); several, comma-separated: the processes of a cluster (nodes and Redis), counted together")
	fs.StringVar(&cfg.query, "query", "a", "list: the prefix searched (case-insensitive)")
	fs.BoolVar(&cfg.json, "json", cfg.json, "print the report as JSON instead of text")
	fs.StringVar(&cfg.prefix, "prefix", cfg.prefix, "prefix of the simulated users' names (a random one by default, so runs do not collide)")
	fs.StringVar(&cfg.localAddrs, "local-addrs", cfg.localAddrs, "comma-separated local IP addresses to connect from, in turn, e.g. 127.0.0.1,127.0.0.2 (more than ~28,000 connections need several)")
	intro := "tandem-load plays many users of the tutorial's signaling protocol against a server and measures it."
	if err := cli.Parse(fs, "TANDEM_LOAD_", intro, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.memoryTolerance = memMiB * (1 << 20)
	cfg.urls = splitList(cfg.url)
	if len(cfg.pids) > 0 {
		cfg.pid = cfg.pids[0]
	}
	if err := cfg.check(); err != nil {
		return err
	}
	if _, err := cli.RaiseOpenFileLimit(); err != nil {
		fmt.Fprintln(stderr, "tandem-load: could not raise the open file limit:", err)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	g, err := newGenerator(cfg, stderr)
	if err != nil {
		return err
	}
	res, err := g.run(ctx)
	if err != nil {
		return err
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		res.print(stdout)
	}
	return res.verdict()
}

func (c *config) check() error {
	switch c.scenario {
	case "relay", "setup":
		if c.users < 2 || c.users%2 != 0 {
			return fmt.Errorf("-users must be even and at least 2 for %s, not %d", c.scenario, c.users)
		}
	case "presence":
		if c.rate == 0 {
			c.rate = 20
		}
		switch {
		case c.users < 10:
			return fmt.Errorf("-users must be at least 10 for presence, not %d", c.users)
		case c.watchShare < 0 || c.watchShare > 0.9:
			return errors.New("-watchers must be between 0 and 0.9 (the rest of the users churn)")
		case c.firstPageShare < 0 || c.firstPageShare > 1:
			return errors.New("-first-page-changes must be between 0 and 1")
		case c.rate > 1000:
			return errors.New("-rate must be at most 1000 changes a second for presence")
		}
	case "login", "idle":
		if c.users < 1 {
			return fmt.Errorf("-users must be at least 1, not %d", c.users)
		}
	case "churn":
		switch {
		case c.settle > churnMaxSettle:
			return fmt.Errorf("-settle must be at most %v for churn (a leak must not be hidden by the server's idle timeout)", churnMaxSettle)
		case c.rate > 1000:
			return errors.New("-rate must be at most 1000 episodes a second for churn")
		case c.duration+c.settle+churnEpisodeTimeout+time.Minute > c.timeout:
			return fmt.Errorf("-timeout %v is too short for -duration %v: give at least -duration + -settle + %v",
				c.timeout, c.duration, churnEpisodeTimeout+time.Minute)
		case c.memoryTolerance < 0:
			return errors.New("-memory-tolerance must not be negative")
		}
		if len(c.urls) != 1 {
			return errors.New("churn measures one server: give one -url")
		}
		if len(c.pids) > 1 {
			return errors.New("churn measures one server: give one -pid")
		}
		if _, err := metricsURL(c.url); err != nil {
			return err
		}
		if _, err := churnSelect(c.episodes); err != nil {
			return err
		}
	case "list":
		if c.query == "" {
			return errors.New("-query must not be empty for list (the prefix searched)")
		}
	default:
		return fmt.Errorf("-scenario must be relay, login, idle, setup, churn, presence or list, not %q", c.scenario)
	}
	switch {
	case c.concurrency < 1:
		return errors.New("-concurrency must be at least 1")
	case c.online < 0, c.candidates < 0, c.rate < 0:
		return errors.New("-online, -candidates and -rate must not be negative")
	case c.duration <= 0, c.warmup < 0, c.settle < 0:
		return errors.New("-duration must be positive, -warmup and -settle not negative")
	case c.timeout <= 0 || c.timeout > maxTimeout:
		return fmt.Errorf("-timeout must be positive and at most %v", maxTimeout)
	case len(c.urls) == 0:
		return errors.New("-url must name at least one server")
	}
	for _, u := range c.urls {
		if !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			return fmt.Errorf("-url must be a ws:// or wss:// URL, not %q", u)
		}
	}
	return nil
}

// splitList splits a comma-separated list, leaving out empty items and the spaces around items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// pidList is the -pid flag: one process id, or several separated by commas.
type pidList []int

func (p *pidList) String() string {
	if p == nil || len(*p) == 0 {
		return "0"
	}
	s := make([]string, len(*p))
	for i, pid := range *p {
		s[i] = strconv.Itoa(pid)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	var pids []int
	for _, item := range splitList(v) {
		pid, err := strconv.Atoi(item)
		if err != nil || pid < 0 {
			return fmt.Errorf("%q is not a process id", item)
		}
		if pid > 0 {
			pids = append(pids, pid)
		}
	}
	*p = pids
	return nil
}
