package client

import (
	"bufio"
	"net"
	"testing"

	"tandem/internal/rfc6455"

	"golang.org/x/sys/unix"
)

// An event loop waits for the socket itself (here with poll) and takes what has arrived with TryReadRaw: a
// message that came in part is kept until the rest arrives, pings are answered on the way.
func TestTryReadRaw(t *testing.T) {
	t.Parallel()
	rest := make(chan struct{})
	url := serve(t, func(t *testing.T, nc net.Conn, br *bufio.Reader) {
		if upgrade(t, nc, br) == nil {
			return
		}
		first := srvFrame(rfc6455.OpText, `{"type":"offer",`)
		write(t, nc, first, srvFrame(fin|rfc6455.OpContinuation, `"name":"al`)[:5]) // the second frame cut short
		<-rest
		write(t, nc, srvFrame(fin|rfc6455.OpContinuation, `"name":"al`)[5:], srvFrame(fin|rfc6455.OpPing, "p"),
			srvFrame(fin|rfc6455.OpText, `{"type":"answer"}`))
		if op, p, err := readFrame(t, br); err != nil || op != rfc6455.OpPong || string(p) != "p" {
			t.Errorf("server: the client's first frame is %#x %q (%v), want a pong", op, p, err)
			return
		}
		expectClose(t, br, 1000)
		write(t, nc, srvFrame(fin|rfc6455.OpClose, closePayload(1000, "")))
	})
	c := dial(t, url, nil)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// wait waits until the socket is readable.
	wait := func() {
		t.Helper()
		var perr error
		if err := rc.Control(func(fd uintptr) {
			_, perr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 5000)
		}); err != nil || perr != nil {
			t.Fatalf("poll: %v %v", err, perr)
		}
	}
	// drain takes every message that has arrived.
	drain := func() (got []string) {
		t.Helper()
		for {
			data, ok, err := c.TryReadRaw()
			if err != nil {
				t.Fatalf("TryReadRaw: %v", err)
			}
			if !ok {
				return got
			}
			got = append(got, string(data))
		}
	}
	if got := drain(); len(got) > 0 { // what came with the handshake's answer is already read: drain first
		t.Fatalf("TryReadRaw = %q with the message's end not sent yet; want nothing", got)
	}
	close(rest)
	var got []string
	for len(got) < 2 {
		wait()
		got = append(got, drain()...)
	}
	if len(got) != 2 || got[0] != `{"type":"offer","name":"al` || got[1] != `{"type":"answer"}` {
		t.Fatalf("TryReadRaw returned %q, want the offer's fragments joined, then the answer", got)
	}
	if data, ok, err := c.TryReadRaw(); ok || err != nil {
		t.Fatalf("TryReadRaw = %q, %v, %v with nothing more sent; want nothing", data, ok, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := c.TryReadRaw(); err != ErrClosed {
		t.Fatalf("TryReadRaw after Close: %v, want ErrClosed", err)
	}
}
