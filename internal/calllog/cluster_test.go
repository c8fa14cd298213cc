package calllog_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"tandem/internal/cluster"
	"tandem/internal/server"
	"tandem/internal/servertest"
	"tandem/protocol"
)

// TestClusterCallLoggedOnce: a call between users of two nodes of a cluster is logged once, by the callee's node,
// with that node's id; the callee's quality report is taken there. (The caller's node keeps no record of it: its
// client's reports are refused with not_in_call, which the web client ignores.)
func TestClusterCallLoggedOnce(t *testing.T) {
	m := cluster.NewMemory(time.Second)
	var srvs []*servertest.Server
	var logs []*logBuffer
	for _, id := range []string{"node-a", "node-b"} {
		lb := &logBuffer{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, servertest.StartOn(t, ln, func(c *server.Config) { c.Cluster = m.Node(id) },
			slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))))
		logs = append(logs, lb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := servertest.Login(t, ctx, srvs[0].URL, "alice", nil)
	bob := servertest.Login(t, ctx, srvs[1].URL, "bob", nil)
	ring(ctx, t, alice, bob, "bob")
	_ = bob.SendAnswer(ctx, "alice", fakeAnswer)
	if _, err := alice.WaitFor(ctx, protocol.TypeAnswer); err != nil {
		t.Fatal(err)
	}
	sendQuality(ctx, t, bob, "alice", map[string]any{"phase": "connected", "path": "relay", "transport": "udp"})
	if got := sync_(ctx, t, bob); len(got) != 0 {
		t.Errorf("bob's report: %+v", got[0])
	}
	_ = bob.SendLeave(ctx, "alice", "")
	if _, err := alice.WaitFor(ctx, protocol.TypeLeave); err != nil {
		t.Fatal(err)
	}
	setUp := logs[1].waitLines(t, "call set up", 1)[0]
	ended := logs[1].waitLines(t, "call ended", 1)[0]
	for _, l := range []map[string]any{setUp, ended} {
		if l["node"] != "node-b" || l["caller"] != "alice" || l["callee"] != "bob" || l["call"] != setUp["call"] {
			t.Errorf("%v", l)
		}
	}
	if ended["outcome"] != "answered" || ended["path"] != "relay" {
		t.Errorf("call ended: %v", ended)
	}
	if n := len(logs[0].lines(t, "call set up")) + len(logs[0].lines(t, "call ended")); n != 0 {
		t.Errorf("the caller's node logged the call too:\n%s", logs[0])
	}
}
