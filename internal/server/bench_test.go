package server_test

import (
	"context"
	"strings"
	"testing"

	"tandem/client"
	"tandem/internal/server"
	"tandem/internal/servertest"
)

// BenchmarkRelay sends one message from alice to bob through a real server on 127.0.0.1 and waits until bob has
// read it: the client's write, the loopback TCP, the server's epoll read, decode, route and write, and bob's
// read. The allocations are the whole process's: the clients' (a context.AfterFunc for each read and write, as
// ctx can be cancelled) and the server's (none).
func BenchmarkRelay(b *testing.B) {
	url := servertest.Start(b, func(c *server.Config) { c.Rate = 0 }).URL
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	tutorial := &client.Options{Tutorial: true}
	alice, bob := servertest.Login(b, ctx, url, "alice", tutorial), servertest.Login(b, ctx, url, "bob", tutorial)
	sdp := `{"type":"offer","sdp":"v=0\r\n` + strings.Repeat(`a=rtcp-fb:96 transport-cc\r\n`, 96) + `"}`
	candidate := `{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61220 typ srflx raddr 192.168.1.23 rport 52364 generation 0 ufrag Vc3e network-id 1 network-cost 10","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Vc3e"}`
	if err := alice.SendOffer(ctx, "bob", []byte(sdp)); err != nil { // the call starts
		b.Fatal(err)
	}
	if m, err := bob.WaitFor(ctx, "offer"); err != nil || m.Type != "offer" {
		b.Fatalf("bob: %v, %v", m, err)
	}
	if err := bob.SendAnswer(ctx, "alice", []byte(`{"type":"answer","sdp":"v=0\r\n"}`)); err != nil { // he takes it
		b.Fatal(err)
	}
	if m, err := alice.WaitFor(ctx, "answer"); err != nil || m.Type != "answer" {
		b.Fatalf("alice: %v, %v", m, err)
	}
	for _, c := range []struct {
		name string
		send func() error
	}{
		{"offer", func() error { return alice.SendOffer(ctx, "bob", []byte(sdp)) }},
		{"candidate", func() error { return alice.SendCandidate(ctx, "bob", []byte(candidate)) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.send(); err != nil {
					b.Fatal(err)
				}
				if _, err := bob.ReadRaw(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
