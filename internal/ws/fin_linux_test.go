package ws

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tandem/internal/rfc6455"
)

// TestFinTearsDown: a client that sends its last messages and closes its socket at once (a page that sends
// leave and goes, a program that exits) is torn down as soon as its FIN arrives, whether the FIN comes in the
// same segment as the messages, after them, or after more than the loop reads at once: its handler gets every
// message and then OnClose, in well under the ping interval. (With the FIN in the messages' segment, the loop's
// one edge-triggered event was taken by the read that found the messages, and the socket sat in CLOSE_WAIT until
// the next ping, 20 s later, met the client's reset.)
func TestFinTearsDown(t *testing.T) {
	small := frame(true, rfc6455.OpText, []byte(`{"type":"leave"}`), true)
	var big []byte
	for i := 0; len(big) < 100<<10; i++ {
		big = append(big, frame(true, rfc6455.OpText, bytes.Repeat([]byte("b"), 1000), true)...)
	}
	for _, mode := range modes {
		for _, tt := range []struct {
			name  string
			data  []byte
			cork  bool // hold the data back so that it leaves with the FIN, in one segment
			reset bool // a TCP reset (SO_LINGER 0) after the data has gone, instead of the FIN
		}{
			{"with the FIN", small, true, false},
			{"before the FIN", small, false, false},
			{"more than a read", big, true, false},
			{"reset", small, false, true},
		} {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				// The keepalive would find the socket dead at its first ping: put it far beyond the test.
				h := startDoor(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, PingInterval: time.Minute, IdleTimeout: 2 * time.Minute}, false, mode.door)
				c := dialRaw(t, h.url, nil)
				e := h.next(t)
				tc := c.nc.(*net.TCPConn)
				if tt.cork {
					raw, err := tc.SyscallConn()
					if err != nil {
						t.Fatal(err)
					}
					_ = raw.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
				}
				c.send(tt.data)
				if tt.reset {
					_ = tc.SetLinger(0)
				}
				start := time.Now()
				_ = tc.Close()
				want := bytes.Count(tt.data, []byte{0x81}) // one text frame each (their payloads hold no 0x81)
				got := 0
				deadline := time.After(3 * time.Second)
				for {
					select {
					case ev := <-e.ch:
						if strings.HasPrefix(ev, "text:") {
							got++
							continue
						}
						if ev != "close" {
							t.Fatalf("got %q", ev)
						}
						if !tt.reset && got != want {
							t.Errorf("%d messages of %d before the close", got, want)
						}
						if d := time.Since(start); d > time.Second {
							t.Errorf("torn down %v after the client closed", d)
						}
						return
					case <-deadline:
						t.Fatalf("still open 3 s after the client closed (%d of %d messages read), with %d connections", got, want, h.srv.Len())
					}
				}
			})
		}
	}
}
