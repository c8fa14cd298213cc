package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tandem/client"
)

// generator runs one scenario.
type generator struct {
	cfg     config
	log     io.Writer
	pl      payloads
	clients []*http.Client // one per local address, used in turn; nil entries: the default client
	dialers []*net.Dialer  // the same local addresses, for raw TCP connections

	mu    sync.Mutex
	open  []*client.Client // every connection, closed at the end (or at the timeout)
	next  int
	drain sync.WaitGroup // readers of idle connections
}

func newGenerator(cfg config, log io.Writer) (*generator, error) {
	g := &generator{cfg: cfg, log: log, pl: newPayloads(), clients: []*http.Client{nil}, dialers: []*net.Dialer{{}}}
	if cfg.localAddrs != "" {
		g.clients, g.dialers = nil, nil
		for _, a := range strings.Split(cfg.localAddrs, ",") {
			ip := net.ParseIP(strings.TrimSpace(a))
			if ip == nil {
				return nil, fmt.Errorf("-local-addrs: %q is not an IP address", a)
			}
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
			g.clients = append(g.clients, &http.Client{Transport: &http.Transport{DialContext: d.DialContext}})
			g.dialers = append(g.dialers, d)
		}
	}
	return g, nil
}

// Result is the report of one run. Fields that a scenario does not measure are left out of the JSON.
type Result struct {
	Scenario    string    `json:"scenario"`
	URL         string    `json:"url"`
	Started     time.Time `json:"started"`
	Users       int       `json:"users"`
	Online      int       `json:"online_idle,omitempty"` // extra idle users held during the run
	Concurrency int       `json:"concurrency,omitempty"`
	Seconds     float64   `json:"seconds"`               // length of the measurement
	TargetRate  float64   `json:"target_rate,omitempty"` // -rate: the pace asked for

	Messages    int64   `json:"messages,omitempty"`
	MessageRate float64 `json:"messages_per_second,omitempty"`
	Logins      int64   `json:"logins,omitempty"`
	LoginRate   float64 `json:"logins_per_second,omitempty"`
	Setups      int64   `json:"setups,omitempty"`
	SetupRate   float64 `json:"setups_per_second,omitempty"`
	Latency     Summary `json:"latency"` // relay: send to receipt; login: connect to reply; setup: offer to answer
	Errors      int64   `json:"errors"`  // error messages received, failed logins
	Stalled     int     `json:"stalled_pairs,omitempty"`

	ServerPID          int              `json:"server_pid,omitempty"`            // the first of -pid
	ServerCPU          float64          `json:"server_cpu_seconds,omitempty"`    // all of -pid together
	Processes          []ProcessFigures `json:"processes,omitempty"`             // each of -pid, when there are several
	PerServerCPUSecond float64          `json:"per_server_cpu_second,omitempty"` // messages, logins or setups
	GeneratorCPU       float64          `json:"generator_cpu_seconds"`

	MemoryBefore  *memory `json:"memory_before,omitempty"`
	MemoryAfter   *memory `json:"memory_after,omitempty"`
	RSSPerConn    float64 `json:"rss_bytes_per_connection,omitempty"`
	PSSPerConn    float64 `json:"pss_bytes_per_connection,omitempty"`
	Connections   int     `json:"connections,omitempty"`
	ServerWarning string  `json:"warning,omitempty"`

	Churn    *ChurnReport    `json:"churn,omitempty"`
	Presence *PresenceReport `json:"presence,omitempty"`
	List     *ListReport     `json:"list,omitempty"`
}

func (g *generator) run(ctx context.Context) (*Result, error) {
	res := &Result{
		Scenario: g.cfg.scenario, URL: g.cfg.url, Started: time.Now().UTC(), Users: g.cfg.users,
		Online: g.cfg.online, ServerPID: g.cfg.pid,
	}
	if g.cfg.scenario == "relay" || g.cfg.scenario == "setup" {
		res.TargetRate = g.cfg.rate
	}
	stop := context.AfterFunc(ctx, g.closeAll) // the timeout unblocks every read
	defer stop()
	defer g.closeAll()

	if g.cfg.online > 0 {
		g.logf("logging in %d idle users", g.cfg.online)
		if _, err := g.openIdle(ctx, "idle", g.cfg.online, g.cfg.concurrency); err != nil {
			return nil, err
		}
	}
	var err error
	switch g.cfg.scenario {
	case "relay":
		err = g.relay(ctx, res)
	case "setup":
		err = g.setup(ctx, res)
	case "login":
		err = g.login(ctx, res)
	case "idle":
		err = g.idle(ctx, res)
	case "churn":
		err = g.churn(ctx, res)
	case "presence":
		res.TargetRate = g.cfg.rate
		err = g.presence(ctx, res)
	case "list":
		err = g.list(ctx, res)
	}
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("stopped after -timeout or a signal: %w", err)
	}
	return res, err
}

func (g *generator) logf(format string, args ...any) {
	fmt.Fprintf(g.log, "tandem-load: "+format+"\n", args...)
}

// dial connects one user to the (first) server and logs it in, as the tutorial's client does.
func (g *generator) dial(ctx context.Context, name string) (*client.Client, error) {
	return g.dialTo(ctx, g.cfg.urls[0], name)
}

// dialTo connects one user to the server at url and logs it in.
func (g *generator) dialTo(ctx context.Context, url, name string) (*client.Client, error) {
	g.mu.Lock()
	hc := g.clients[g.next%len(g.clients)]
	g.next++
	g.mu.Unlock()
	c, err := client.Dial(ctx, url, &client.Options{HTTPClient: hc, Tutorial: true})
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.open = append(g.open, c)
	g.mu.Unlock()
	if ctx.Err() != nil { // closeAll may have run before c was added
		c.CloseNow()
		return nil, ctx.Err()
	}
	if _, err := c.Login(ctx, name, ""); err != nil {
		return nil, err
	}
	return c, nil
}

// closeAll drops every connection at once (no closing handshake: thousands of them would take a while).
func (g *generator) closeAll() {
	g.mu.Lock()
	open := g.open
	g.open = nil
	g.mu.Unlock()
	for _, c := range open {
		_ = c.CloseNow()
	}
	g.drain.Wait()
}

// openUsers logs in users named prefix0, prefix1..., at most concurrency at a time, and returns them with the
// time each took from connecting to the login reply. It stops at the first failure. With several servers (a
// cluster) the users are spread over them by nodeOf.
func (g *generator) openUsers(ctx context.Context, names []string, concurrency int) ([]*client.Client, []latencies, error) {
	users := make([]*client.Client, len(names))
	lats := make([]latencies, concurrency)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				c, err := g.dialTo(ctx, g.cfg.urls[nodeOf(i, len(names), len(g.cfg.urls))], names[i])
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("user %d of %d (%s): %w", i+1, len(names), names[i], err) })
					cancel()
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
				users[i] = c
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	return users, lats, ctx.Err()
}

// nodeOf is the server (of nodes) that user i of n is connected to. Pairs are made of the first half of the users
// and the second (user i and user n/2+i, see openPairs): user i of the first half is on node i, its partner on
// node i+1 (modulo nodes), so that with two or more nodes every pair's users are on different nodes. Users who
// are not paired are spread evenly all the same.
func nodeOf(i, n, nodes int) int {
	if nodes <= 1 {
		return 0
	}
	if half := n / 2; n%2 == 0 && i >= half {
		return (i - half + 1) % nodes
	}
	return i % nodes
}

func (g *generator) names(kind string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = g.cfg.prefix + kind + strconv.Itoa(i)
	}
	return names
}

// openIdle logs in n users that only answer the server's pings until the end of the run.
func (g *generator) openIdle(ctx context.Context, kind string, n, concurrency int) ([]*client.Client, error) {
	users, _, err := g.openUsers(ctx, g.names(kind, n), concurrency)
	if err != nil {
		return nil, err
	}
	g.drain.Add(len(users))
	for _, c := range users {
		go func() {
			defer g.drain.Done()
			for {
				if _, err := c.ReadRaw(context.Background()); err != nil {
					return // closed at the end of the run
				}
			}
		}()
	}
	return users, nil
}

// cpuMeter measures the CPU time of the server's processes (given -pid: one, or a cluster's nodes and Redis) and
// of the generator over a stretch of time.
type cpuMeter struct {
	pids   []int
	server []time.Duration // at the start, one per pid
	gen    time.Duration
	start  time.Time
	err    error
	named  bool // errors name their process (several were given)
}

func startCPU(pids ...int) *cpuMeter {
	m := &cpuMeter{start: time.Now(), gen: selfCPU(), named: len(pids) > 1}
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		cpu, err := procCPU(pid)
		if err != nil && m.err == nil {
			m.err = m.which(pid, err)
		}
		m.pids, m.server = append(m.pids, pid), append(m.server, cpu)
	}
	return m
}

// which names the process an error is about when there are several (one alone is reported as before).
func (m *cpuMeter) which(pid int, err error) error {
	if m.named {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	return err
}

// stop fills in res's CPU figures, with done units of work (messages, logins, setups) over the stretch, and
// returns the stretch's length. With several processes the server's CPU time is their sum, and each one's is in
// res.Processes.
func (m *cpuMeter) stop(res *Result, done int64) time.Duration {
	elapsed := time.Since(m.start)
	res.GeneratorCPU = (selfCPU() - m.gen).Seconds()
	if len(m.pids) > 0 && m.err == nil {
		var sum float64
		var each []ProcessFigures
		for i, pid := range m.pids {
			cpu, err := procCPU(pid)
			if err != nil {
				m.err = m.which(pid, err)
				break
			}
			secs := (cpu - m.server[i]).Seconds()
			sum += secs
			each = append(each, ProcessFigures{PID: pid, CPU: secs})
		}
		if m.err == nil {
			res.ServerCPU = sum
			if res.ServerCPU > 0 {
				res.PerServerCPUSecond = float64(done) / res.ServerCPU
			}
			if len(m.pids) > 1 {
				res.Processes = mergeProcesses(res.Processes, each)
			}
		}
	}
	if m.err != nil {
		res.ServerWarning = "server CPU not measured: " + m.err.Error()
	}
	res.Seconds = elapsed.Seconds()
	return elapsed
}

// ProcessFigures are one server process's figures, when several are measured together (a cluster).
type ProcessFigures struct {
	PID          int     `json:"pid"`
	CPU          float64 `json:"cpu_seconds"`
	MemoryBefore *memory `json:"memory_before,omitempty"`
	MemoryAfter  *memory `json:"memory_after,omitempty"`
}

// mergeProcesses puts the CPU times of each into have, which may already hold the processes' memory.
func mergeProcesses(have, each []ProcessFigures) []ProcessFigures {
	if len(have) != len(each) {
		return each
	}
	for i := range have {
		have[i].CPU = each[i].CPU
	}
	return have
}

// hasType reports whether a frame from the server is a message of type typ. Both tandem and the tutorial server
// put "type" first, which is checked without decoding; a frame that does not start so is decoded in full.
func hasType(frame []byte, typ string) bool {
	const prefix = `{"type":"`
	if len(frame) > len(prefix) && string(frame[:len(prefix)]) == prefix {
		rest := frame[len(prefix):]
		return len(rest) > len(typ) && string(rest[:len(typ)]) == typ && rest[len(typ)] == '"'
	}
	var m client.Message
	if client.Decode(frame, &m) != nil {
		return false // the tutorial's "Hello world", say
	}
	return m.Type == typ
}
