// Command tandem-turnload drives a TURN server (tandem's, or coturn, or any other) with relayed media as calls
// make it: pairs of clients, each with an allocation, each bound by a channel to the other's relay, sending
// fixed-size ChannelData both ways. It measures the packets delivered, those lost, the server's CPU time (from
// /proc, given the server's -pid) and its memory per allocation. bench/turn.sh runs it against tandem and coturn.
//
// Modes:
//
//	-rate R   every client sends R packets a second (calls at a paced rate: 100 is about 1 Mbit/s of 1,200 bytes)
//	-rate 0   saturation: every client sends as fast as its packets come back, -window packets in flight
//	-idle     no traffic: the server's memory per allocation, from its resident size before and after
//
// Credentials: -secret mints TURN REST API credentials (coturn's use-auth-secret); -login logs in to a tandem
// server's WebSocket and uses the credential of its login reply (tandem accepts only those). Every run is bounded:
// -duration of measurement after -warmup, and -timeout for the whole.
//
// The TURN requests (allocation, channel binding) go through the turnclient package, one client at a time. The
// data path is the generator's own (-engine): on Linux by default a few event loops (-loops) that drive every
// client's socket from an epoll set, with recvmmsg and sendmmsg batches over UDP and many frames per read and per
// write over TCP, so that the generator costs less per packet than the servers it measures (loops_linux.go);
// elsewhere, or with -engine goroutines, a goroutine per client and a system call per packet (goroutines.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"tandem/client"
	"tandem/internal/cli"
	"tandem/internal/turnserver"
	"tandem/internal/turnserver/turnclient"
)

func main() {
	cli.Main("tandem-turnload", func(ctx context.Context) error { return run(ctx, os.Args[1:]) })
}

type config struct {
	server    string
	transport string
	secret    string
	login     string
	calls     int
	rate      int
	window    int
	size      int
	idle      bool
	warmup    time.Duration
	duration  time.Duration
	timeout   time.Duration
	pid       int
	label     string
	engine    string
	loops     int
}

// result is one run's line of JSON.
type result struct {
	Label        string  `json:"label,omitempty"`
	Transport    string  `json:"transport"`
	Calls        int     `json:"calls"`
	Rate         int     `json:"rate"`
	Size         int     `json:"size"`
	Seconds      float64 `json:"seconds,omitempty"`
	Sent         uint64  `json:"sent,omitempty"`
	Delivered    uint64  `json:"delivered,omitempty"`
	PerSecond    float64 `json:"delivered_per_s,omitempty"`
	LostTotal    uint64  `json:"lost_total"`
	LossPct      float64 `json:"loss_pct"`
	CPUSeconds   float64 `json:"server_cpu_s,omitempty"`
	CPUCores     float64 `json:"server_cores,omitempty"`
	PerCPUSecond float64 `json:"delivered_per_cpu_s,omitempty"`
	KBPerAlloc   float64 `json:"kb_per_allocation,omitempty"`

	// What the generator itself did: its engine, its CPU in cores over the measurement, and the faults it saw.
	Engine       string  `json:"engine,omitempty"`
	GenCores     float64 `json:"generator_cores,omitempty"`
	Corrupt      uint64  `json:"corrupt,omitempty"`      // frames on the channel whose header or data were not what was sent
	OutOfOrder   uint64  `json:"out_of_order,omitempty"` // frames that came after a later one of theirs (or twice): not counted delivered
	Stalls       uint64  `json:"stalls,omitempty"`       // saturating: times a client got no credit for 200 ms and sent a new window
	RcvbufErrors uint64  `json:"udp_rcvbuf_errors"`      // the system's UDP receive-buffer drops over the measurement (/proc/net/snmp)
	// Of the UDP sockets' own drop counts over the measurement (/proc/net/udp): the generator's clients', and all
	// others' (the server's, and any other process's).
	GenUDPDrops   uint64 `json:"generator_udp_drops"`
	OtherUDPDrops uint64 `json:"other_udp_drops"`

	// The machine over the measurement (/proc/stat), in cores: what no one used, and what niced processes used (on
	// a shared machine, other people's tests): a server held under one core on a machine with none idle was held
	// by the machine.
	IdleCores float64 `json:"machine_idle_cores"`
	NiceCores float64 `json:"machine_nice_cores"`
}

func run(ctx context.Context, args []string) error {
	var c config
	fs := flag.NewFlagSet("tandem-turnload", flag.ContinueOnError)
	fs.StringVar(&c.server, "server", "127.0.0.1:3478", "the TURN server, ip:port")
	fs.StringVar(&c.transport, "transport", "udp", "udp or tcp, between the clients and the server")
	fs.StringVar(&c.secret, "secret", "", "the server's shared secret: credentials are minted with it (coturn's use-auth-secret)")
	fs.StringVar(&c.login, "login", "", "a tandem WebSocket URL (ws://host:port/ws): credentials come from a login reply")
	fs.IntVar(&c.calls, "calls", 50, "calls: pairs of clients relaying to each other")
	fs.IntVar(&c.rate, "rate", 100, "packets a second each client sends; 0: as fast as they come back (-window)")
	fs.IntVar(&c.window, "window", 16, "with -rate 0, packets each client keeps in flight")
	fs.IntVar(&c.size, "size", 1200, "bytes of data in each packet")
	fs.BoolVar(&c.idle, "idle", false, "no traffic: measure the server's memory per allocation (needs -pid)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "traffic before the measurement starts")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long the measurement lasts")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "the longest the whole run may take")
	fs.IntVar(&c.pid, "pid", 0, "the server's process id, for its CPU time and memory")
	fs.StringVar(&c.label, "label", "", "a label copied into the result")
	fs.StringVar(&c.engine, "engine", defaultEngine, "the data path: loops (event loops, Linux) or goroutines (a goroutine per client)")
	fs.IntVar(&c.loops, "loops", 1, "with -engine loops, the event loops (each a goroutine; calls are shared out among them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case c.transport != "udp" && c.transport != "tcp":
		return fmt.Errorf("-transport %q: want udp or tcp", c.transport)
	case (c.secret == "") == (c.login == ""):
		return errors.New("give one of -secret and -login")
	case c.engine != "loops" && c.engine != "goroutines":
		return fmt.Errorf("-engine %q: want loops or goroutines", c.engine)
	case c.calls < 1 || c.size <= seqSize || c.size > 1500 || c.rate < 0 || c.window < 1 || c.loops < 1:
		return fmt.Errorf("-calls, -loops, -window must be positive, -size %d-1500, -rate not negative", seqSize+1)
	case c.idle && c.pid == 0:
		return errors.New("-idle needs -pid")
	case c.timeout > 30*time.Minute:
		c.timeout = 30 * time.Minute
	}
	if _, err := cli.RaiseOpenFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-turnload: raising the open file limit:", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := measure(ctx, &c)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// endpoint is one client of a call.
type endpoint struct {
	c      *turnclient.Client
	relay  netip.AddrPort
	frame  []byte         // the ChannelData frame it sends, always the same
	peer   *endpoint      // the other client of the call
	local  netip.AddrPort // the client's own address
	credit chan struct{}  // goroutine engine, -rate 0: the packets it may send, given back as the other side receives them

	sent, received atomic.Uint64
}

// engine is a data path: it relays between the endpoints from when it starts until it is closed.
type engine interface {
	// counts returns the packets sent and delivered so far.
	counts() (sent, delivered uint64)
	// stopSending stops all sending; what is in flight is still received.
	stopSending()
	// close stops receiving too and releases the engine's sockets and goroutines.
	close()
	// faults returns what the engine saw that was not as sent.
	faults() faultCounts
}

// faultCounts are the frames on the channel that were not delivered as sent.
type faultCounts struct {
	corrupt, outOfOrder uint64
	stalls              uint64 // times a saturating client waited stallAfter for a credit and sent a new window
}

// seqSize is the size of the sequence number at the start of every packet's data (the loop engine checks that
// each direction's packets arrive once and in order).
const seqSize = 8

func measure(ctx context.Context, c *config) (*result, error) {
	server, err := netip.ParseAddrPort(c.server)
	if err != nil {
		return nil, fmt.Errorf("-server: %w", err)
	}
	username, password, closeLogin, err := credential(ctx, c)
	if err != nil {
		return nil, err
	}
	defer closeLogin()

	rssBefore := rss(c.pid)
	eps, err := setUp(ctx, c, server, username, password)
	defer func() {
		for _, e := range eps {
			_ = e.c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	res := &result{Label: c.label, Transport: c.transport, Calls: c.calls, Rate: c.rate, Size: c.size}
	if c.idle {
		time.Sleep(time.Second) // let the server's goroutines and timers settle
		res.KBPerAlloc = float64(rss(c.pid)-rssBefore) / 1024 / float64(len(eps))
		return res, nil
	}

	var eng engine
	if c.engine == "loops" {
		if eng, err = startLoops(c, eps); err != nil {
			return nil, err
		}
	} else {
		eng = startGoroutines(c, eps)
	}
	defer eng.close()

	select {
	case <-time.After(c.warmup):
	case <-ctx.Done():
	}
	sent0, recv0 := eng.counts()
	ports := make(map[uint16]bool, len(eps))
	for _, e := range eps {
		ports[e.local.Port()] = true
	}
	mine0, others0 := udpDrops(ports)
	cpu0, gen0, rcvbuf0, machine0 := cpuTime(c.pid), cpuTime(os.Getpid()), udpRcvbufErrors(), machineTimes()
	start := time.Now()
	select {
	case <-time.After(c.duration):
	case <-ctx.Done():
	}
	sent1, recv1 := eng.counts()
	cpu1, gen1, rcvbuf1, machine1 := cpuTime(c.pid), cpuTime(os.Getpid()), udpRcvbufErrors(), machineTimes()
	mine1, others1 := udpDrops(ports)
	elapsed := time.Since(start).Seconds()
	eng.stopSending()
	time.Sleep(500 * time.Millisecond) // what is in flight arrives
	sentAll, recvAll := eng.counts()
	f := eng.faults()

	res.Engine = c.engine
	res.IdleCores = (machine1.idle - machine0.idle) / elapsed
	res.NiceCores = (machine1.nice - machine0.nice) / elapsed
	res.GenCores = (gen1 - gen0) / elapsed
	res.Corrupt, res.OutOfOrder, res.Stalls = f.corrupt, f.outOfOrder, f.stalls
	if c.transport == "udp" {
		res.GenUDPDrops, res.OtherUDPDrops = mine1-mine0, max(others1, others0)-others0
	}
	if rcvbuf1 >= rcvbuf0 {
		res.RcvbufErrors = rcvbuf1 - rcvbuf0
	}
	res.Seconds = elapsed
	res.Sent, res.Delivered = sent1-sent0, recv1-recv0
	res.PerSecond = float64(res.Delivered) / elapsed
	if sentAll > recvAll {
		res.LostTotal = sentAll - recvAll
	}
	res.LossPct = 100 * float64(res.LostTotal) / float64(max(sentAll, 1))
	if c.pid != 0 {
		res.CPUSeconds = cpu1 - cpu0
		res.CPUCores = res.CPUSeconds / elapsed
		if res.CPUSeconds > 0 {
			res.PerCPUSecond = float64(res.Delivered) / res.CPUSeconds
		}
	}
	return res, ctx.Err()
}

// credential returns a TURN credential: minted with -secret, or from a tandem login reply (the login stays open
// until closeLogin, so that the server keeps the credential usable for new allocations).
func credential(ctx context.Context, c *config) (username, password string, closeLogin func(), err error) {
	if c.secret != "" {
		creds, err := turnserver.NewCredentials(c.secret, time.Hour)
		if err != nil {
			return "", "", nil, err
		}
		u, p := creds.Mint(turnserver.NewTag(), "turnload")
		return u, p, func() {}, nil
	}
	wc, err := client.Dial(ctx, c.login, nil)
	if err != nil {
		return "", "", nil, fmt.Errorf("-login: %w", err)
	}
	reply, err := wc.Login(ctx, "turnload-"+strconv.Itoa(os.Getpid()), "")
	if err != nil {
		_ = wc.Close()
		return "", "", nil, fmt.Errorf("-login: %w", err)
	}
	for _, s := range reply.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") && s.Username != "" {
				return s.Username, s.Credential, func() { _ = wc.Close() }, nil
			}
		}
	}
	_ = wc.Close()
	return "", "", nil, errors.New("-login: the login reply has no TURN credential")
}

// setUp makes the calls: two clients each, each allocating and binding channel 0x4000 to the other's relay.
func setUp(ctx context.Context, c *config, server netip.AddrPort, username, password string) ([]*endpoint, error) {
	var eps []*endpoint
	payload := make([]byte, c.size)
	for i := range payload {
		payload[i] = byte(i)
	}
	for range 2 * c.calls {
		if ctx.Err() != nil {
			return eps, ctx.Err()
		}
		tc, err := turnclient.Dial(c.transport, server, username, password, &turnclient.Options{RTO: time.Second})
		if err != nil {
			return eps, err
		}
		e := &endpoint{c: tc, local: tc.LocalAddr()}
		eps = append(eps, e)
		if e.relay, err = tc.Allocate(); err != nil {
			return eps, fmt.Errorf("allocation %d: %w", len(eps), err)
		}
		e.frame = turnclient.AppendChannelData(nil, 0x4000, payload, c.transport == "tcp")
	}
	for i := 0; i < len(eps); i += 2 {
		a, b := eps[i], eps[i+1]
		a.peer, b.peer = b, a
		for _, e := range []*endpoint{a, b} {
			if err := e.c.BindChannel(0x4000, e.peer.relay); err != nil {
				return eps, fmt.Errorf("channel binding: %w", err)
			}
		}
	}
	return eps, nil
}

func totals(eps []*endpoint) (n uint64) {
	for _, e := range eps {
		n += e.sent.Load()
	}
	return n
}

func receivedTotal(eps []*endpoint) (n uint64) {
	for _, e := range eps {
		n += e.received.Load()
	}
	return n
}

// cpuTime is the CPU time of process pid (user and system, all threads), in seconds; 0 without a pid.
func cpuTime(pid int) float64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) in parentheses; utime and stime are the 14th
	// and 15th fields of the line, in clock ticks (100 a second on Linux).
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// cpuTimes are the machine's CPU seconds (all cores) spent idle and in niced processes.
type cpuTimes struct{ idle, nice float64 }

// machineTimes reads the machine's cpuTimes from the first line of /proc/stat (clock ticks, 100 a second).
func machineTimes() cpuTimes {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimes{}
	}
	nice, _ := strconv.ParseFloat(f[2], 64)
	idle, _ := strconv.ParseFloat(f[4], 64)
	iowait, _ := strconv.ParseFloat(f[5], 64)
	return cpuTimes{idle: (idle + iowait) / 100, nice: nice / 100}
}

// udpRcvbufErrors is the system's count of UDP datagrams dropped for a full receive buffer (RcvbufErrors of the
// Udp line of /proc/net/snmp), 0 where there is none.
func udpRcvbufErrors() uint64 {
	raw, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, "Udp: ")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(rest)
			continue
		}
		for i, v := range strings.Fields(rest) {
			if i < len(names) && names[i] == "RcvbufErrors" {
				n, _ := strconv.ParseUint(v, 10, 64)
				return n
			}
		}
	}
	return 0
}

// udpDrops sums the drop counts of the system's UDP sockets (/proc/net/udp and udp6): those with a local port of
// ports (the generator's clients), and the others.
func udpDrops(ports map[uint16]bool) (mine, others uint64) {
	for _, name := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		raw, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 {
				continue
			}
			_, portHex, _ := strings.Cut(f[1], ":")
			port, _ := strconv.ParseUint(portHex, 16, 16)
			drops, _ := strconv.ParseUint(f[len(f)-1], 10, 64)
			if ports[uint16(port)] {
				mine += drops
			} else {
				others += drops
			}
		}
	}
	return mine, others
}

// rss is the resident memory of process pid in bytes; 0 without a pid.
func rss(pid int) int64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
