package rediscluster

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/cluster"
	"tandem/internal/redistest"
)

// counting is a node's Local that only counts what is delivered to it.
type counting struct{ got chan struct{} }

func (c *counting) Deliver(*cluster.Envelope)             { c.got <- struct{}{} }
func (c *counting) NodeDown(string)                       {}
func (c *counting) Registrations() []cluster.Registration { return nil }
func (c *counting) Evict(string, string)                  {}
func (c *counting) Undelivered(*cluster.Envelope)         {}

// BenchmarkBus sends relayed messages (an offer's size) from one node to another through a real redis-server,
// 64 in flight, as a relay between many pairs of users does: the cost of the message path between nodes (the
// outbox, the client's pipeline, the subscription, decoding), both nodes in this process.
func BenchmarkBus(b *testing.B) {
	r := redistest.Start(b)
	const window = 64
	nodes := make([]*Backend, 2)
	locals := make([]*counting, 2)
	for i, id := range []string{"a", "b"} {
		n, err := New(testConfig(r.URL(), "bench:", id))
		if err != nil {
			b.Fatal(err)
		}
		locals[i] = &counting{got: make(chan struct{}, 2*window)}
		if err := n.Start(locals[i]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Close(true) })
		deadline := time.Now().Add(10 * time.Second)
		for n.Ready() != nil {
			if time.Now().After(deadline) {
				b.Fatalf("node %s not ready: %v", id, n.Ready())
			}
			time.Sleep(10 * time.Millisecond)
		}
		nodes[i] = n
	}
	frame := append([]byte(`{"type":"offer","name":"alice","offer":{"type":"offer","sdp":"`),
		append(bytes.Repeat([]byte(`a=candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host\r\n`), 40), `"}}`...)...)
	redisPID := pidOf(b, r.Socket())
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	self0, redis0 := selfCPU(), procCPU(b, redisPID)
	inflight := 0
	for range b.N {
		for inflight >= window {
			<-locals[1].got
			inflight--
		}
		if !nodes[0].Send("b", &cluster.Envelope{Kind: cluster.Message, From: "alice", FromNode: "a", To: "bob", Frame: frame}) {
			b.Fatal("the outbox refused a message")
		}
		inflight++
	}
	for ; inflight > 0; inflight-- {
		<-locals[1].got
	}
	b.StopTimer()
	b.ReportMetric(float64(selfCPU()-self0)/float64(b.N), "nodes-cpu-ns/op")
	b.ReportMetric(float64(procCPU(b, redisPID)-redis0)/float64(b.N), "redis-cpu-ns/op")
}

// selfCPU is the CPU time this process (both nodes) has used, in nanoseconds.
func selfCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// pidOf finds the redis-server serving socket (redistest's, started with it on its command line).
func pidOf(b *testing.B, socket string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if bytes.Contains(cmd, []byte("redis-server")) && bytes.Contains(cmd, []byte(socket)) {
			return pid
		}
	}
	b.Skip("the redis-server's process not found in /proc")
	return 0
}

// procCPU is the CPU time (utime + stime) of process pid, in nanoseconds.
func procCPU(b *testing.B, pid int) int64 {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return (utime + stime) * int64(time.Second) / 100 // USER_HZ
}
