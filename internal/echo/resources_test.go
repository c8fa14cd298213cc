package echo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"tandem/client"
	"tandem/internal/echo"
	"tandem/internal/servertest"
	"tandem/internal/webrtctest"
	"tandem/protocol"
)

// rawCaller is a caller that makes its peer connections itself, so that a test can replace one, or give up on
// one, as a browser tab may: it offers with every candidate in the SDP, and applies the echo peer's answer and
// candidates to its latest peer connection.
type rawCaller struct {
	t      *testing.T
	name   string
	c      *client.Client
	api    *webrtc.API
	leaves chan *client.Message
	done   chan struct{}

	// config is the configuration of its peer connections: the ICE servers of its login reply, and whatever the
	// test sets.
	config webrtc.Configuration

	mu  sync.Mutex
	pc  *webrtc.PeerConnection
	pcs []*webrtc.PeerConnection
}

func newRawCaller(ctx context.Context, t *testing.T, api *webrtc.API, url, name string) *rawCaller {
	t.Helper()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.Login(ctx, name, "")
	if err != nil {
		c.CloseNow()
		t.Fatal(err)
	}
	r := &rawCaller{t: t, name: name, c: c, api: api, leaves: make(chan *client.Message, 16), done: make(chan struct{})}
	for _, s := range reply.ICEServers {
		r.config.ICEServers = append(r.config.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	go r.read()
	t.Cleanup(r.close)
	return r
}

func (r *rawCaller) read() {
	defer close(r.done)
	for {
		m, err := r.c.Read(context.Background())
		if _, ok := errors.AsType[*client.DecodeError](err); ok {
			continue
		}
		if err != nil {
			return
		}
		r.mu.Lock()
		pc := r.pc
		r.mu.Unlock()
		switch m.Type {
		case protocol.TypeAnswer:
			var sd webrtc.SessionDescription
			if json.Unmarshal(m.Answer, &sd) == nil && pc != nil {
				_ = pc.SetRemoteDescription(sd)
			}
		case protocol.TypeCandidate:
			var c webrtc.ICECandidateInit
			if json.Unmarshal(m.Candidate, &c) == nil && pc != nil && c.Candidate != "" {
				_ = pc.AddICECandidate(c)
			}
		case protocol.TypeLeave, protocol.TypeError:
			r.leaves <- m
		}
	}
}

// offer makes a new peer connection (a data channel and an audio track) and offers it to echo; connected is
// closed once it is connected.
func (r *rawCaller) offer(ctx context.Context) (pc *webrtc.PeerConnection, connected chan struct{}) {
	t := r.t
	t.Helper()
	pc, err := r.api.NewPeerConnection(r.config)
	if err != nil {
		t.Fatal(err)
	}
	connected = make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	if _, err := pc.CreateDataChannel("chat", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	r.mu.Lock()
	r.pc = pc
	r.pcs = append(r.pcs, pc)
	r.mu.Unlock()
	raw, _ := json.Marshal(pc.LocalDescription())
	if err := r.c.SendOffer(ctx, "echo", raw); err != nil {
		t.Fatal(err)
	}
	return pc, connected
}

// waitLeave waits, at most within, for a leave from echo (or an error) and returns it.
func (r *rawCaller) waitLeave(within time.Duration) *client.Message {
	r.t.Helper()
	select {
	case m := <-r.leaves:
		return m
	case <-time.After(within):
		r.t.Fatalf("%s: no leave from echo within %v", r.name, within)
		return nil
	}
}

func (r *rawCaller) close() {
	r.c.CloseNow()
	<-r.done
	r.mu.Lock()
	pcs := r.pcs
	r.pcs, r.pc = nil, nil
	r.mu.Unlock()
	for _, pc := range pcs {
		_ = pc.GracefulClose()
	}
}

func waitClosed(ctx context.Context, t *testing.T, what string, ch chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

// openFiles counts the process's open descriptors, leaving out the server side of the signaling connections (TCP
// sockets on the server's port): those are the WebSocket layer's, which has tests of its own, and the server may
// take a while to see that a client closed its connection.
func openFiles(t *testing.T, serverPort int) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	server := map[string]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		data, _ := os.ReadFile("/proc/net/" + table)
		for line := range strings.Lines(string(data)) {
			f := strings.Fields(line)
			if len(f) > 9 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", serverPort)) {
				server["socket:["+f[9]+"]"] = true
			}
		}
	}
	n := 0
	for _, fd := range fds {
		if target, _ := os.Readlink("/proc/self/fd/" + fd.Name()); !server[target] {
			n++
		}
	}
	return n
}

// socketOf finds the line of /proc/net that describes a socket:[inode] descriptor.
func socketOf(target string) string {
	inode, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return ""
	}
	inode = strings.TrimSuffix(inode, "]")
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6", "unix"} {
		data, _ := os.ReadFile("/proc/net/" + table)
		for line := range strings.Lines(string(data)) {
			if f := strings.Fields(line); len(f) > 9 && (f[9] == inode || (table == "unix" && f[6] == inode)) {
				return table + ": " + strings.TrimSpace(line)
			}
		}
	}
	return ""
}

// describeFiles lists the open descriptors and what they are, for a failure message.
func describeFiles() string {
	fds, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, fd := range fds {
		target, _ := os.Readlink("/proc/self/fd/" + fd.Name())
		fmt.Fprintf(&b, "%s -> %s %s\n", fd.Name(), target, socketOf(target))
	}
	return b.String()
}

// TestEchoReleasesEverything sets up test calls and ends them in every way a call ends (the caller hangs up, the
// caller's connection drops, the time limit, a caller that never connects, a caller that replaces its peer
// connection, a caller refused beyond MaxCalls), then checks that the process is back to the descriptors and
// goroutines it had before.
func TestEchoReleasesEverything(t *testing.T) {
	srv := servertest.StartOn(t, listen(t, "127.0.0.1:0"), withEcho, testLogger(t))
	url := srv.URL
	_, port, _ := net.SplitHostPort(srv.Addr)
	serverPort, _ := strconv.Atoi(port)
	const (
		limit          = 5 * time.Second
		connectTimeout = time.Second
		maxCalls       = 3
	)
	_, reg := runEcho(t, echo.Config{URL: url, Limit: limit, ConnectTimeout: connectTimeout, MaxCalls: maxCalls,
		Peers: allowLoopback, SettingEngine: webrtctest.LoopbackOnly})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := webrtctest.NewAPI()
	if err != nil {
		t.Fatal(err)
	}

	// One call first, so that what pion starts once per process is there before counting.
	warm := newRawCaller(ctx, t, api, url, "warm-up")
	_, connected := warm.offer(ctx)
	waitClosed(ctx, t, "warm-up call", connected)
	warm.close()
	waitGauge(ctx, t, reg, "tandem_echo_peer_connections", 0)
	baseFiles, baseGoroutines := settle(ctx, t, serverPort, -1, -1)
	before := describeFiles()
	t.Logf("before: %d descriptors, %d goroutines", baseFiles, baseGoroutines)

	// Hung up by the caller, dropped with the caller's connection, and at the time limit, three at once: the
	// echo peer's cap.
	hangup := newRawCaller(ctx, t, api, url, "hangup")
	drop := newRawCaller(ctx, t, api, url, "drop")
	timeout := newRawCaller(ctx, t, api, url, "timeout")
	started := time.Now()
	for _, r := range []*rawCaller{hangup, drop, timeout} {
		_, connected := r.offer(ctx)
		waitClosed(ctx, t, r.name+"'s call", connected)
	}
	// One more caller is refused while three calls go on, and nobody else is disturbed.
	refused := newRawCaller(ctx, t, api, url, "refused")
	refused.offer(ctx)
	if m := refused.waitLeave(5 * time.Second); m.Type != protocol.TypeLeave || m.Reason != protocol.ReasonDeclined {
		t.Errorf("a caller beyond MaxCalls got %+v, want a leave (declined)", m)
	}
	refused.close()
	if err := hangup.c.SendLeave(ctx, "echo", protocol.ReasonHangup); err != nil {
		t.Fatal(err)
	}
	hangup.close()
	drop.close()
	m := timeout.waitLeave(limit + 5*time.Second)
	if m.Type != protocol.TypeLeave || m.Reason != protocol.ReasonHangup || time.Since(started) < limit {
		t.Errorf("after %v the caller got %+v, want a leave (hangup) at the time limit", time.Since(started), m)
	}
	timeout.close()

	// A caller that never connects: its peer connection is gone as soon as it offered.
	never := newRawCaller(ctx, t, api, url, "never")
	pc, _ := never.offer(ctx)
	offered := time.Now()
	_ = pc.Close()
	if m := never.waitLeave(connectTimeout + 3*time.Second); m.Type != protocol.TypeLeave {
		t.Errorf("a caller that never connected got %+v, want a leave", m)
	} else {
		t.Logf("a call that never connected ended after %v", time.Since(offered).Round(time.Millisecond))
	}
	never.close()

	// A caller that replaces its peer connection (a reloaded page): the new one gets the call, the old one is
	// released at once.
	replace := newRawCaller(ctx, t, api, url, "replace")
	old, connected := replace.offer(ctx)
	waitClosed(ctx, t, "the first peer connection", connected)
	_, connected = replace.offer(ctx)
	waitClosed(ctx, t, "the replacing peer connection", connected)
	_ = old.Close()
	waitGauge(ctx, t, reg, "tandem_echo_peer_connections", 1)
	select {
	case m := <-replace.leaves:
		t.Errorf("the caller that replaced its peer connection got %+v", m)
	default:
	}
	replace.close()

	waitGauge(ctx, t, reg, "tandem_echo_peer_connections", 0)
	files, goroutines := settle(ctx, t, serverPort, baseFiles, baseGoroutines)
	t.Logf("after: %d descriptors, %d goroutines", files, goroutines)
	if files > baseFiles || goroutines > baseGoroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("after the calls: %d descriptors (%d before), %d goroutines (%d before)\nbefore:\n%s\nafter:\n%s\n%s",
			files, baseFiles, goroutines, baseGoroutines, before, describeFiles(), buf[:runtime.Stack(buf, true)])
	}
}

// settle waits until the descriptors and goroutines are at most maxFiles and maxGoroutines (or, for -1, stop
// changing), within a bounded time, and returns them.
func settle(ctx context.Context, t *testing.T, serverPort, maxFiles, maxGoroutines int) (files, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	prevFiles, prevGoroutines, stable := -1, -1, 0
	for {
		files, goroutines = openFiles(t, serverPort), runtime.NumGoroutine()
		if maxFiles >= 0 && files <= maxFiles && goroutines <= maxGoroutines {
			return files, goroutines
		}
		if files == prevFiles && goroutines == prevGoroutines {
			stable++
		} else {
			stable = 0
		}
		if maxFiles < 0 && stable >= 10 {
			return files, goroutines
		}
		prevFiles, prevGoroutines = files, goroutines
		if time.Now().After(deadline) || ctx.Err() != nil {
			return files, goroutines
		}
		time.Sleep(50 * time.Millisecond) // descriptors and goroutines going away are no event to wait on
	}
}
