package ws

import (
	"testing"
	"time"

	"tandem/internal/rfc6455"
)

// pausing is a Handler that pauses its connection's reading on the message "pause" and records every message.
type pausing struct {
	*events
	paused chan struct{}
}

func (p *pausing) OnText(msg []byte) {
	if string(msg) == "pause" {
		p.c.PauseReading()
		p.paused <- struct{}{}
	}
	p.events.OnText(msg)
}

// TestPauseReading: a connection whose Handler paused it is handed no more messages, even those that came in the
// same read, until ResumeReading (called from another goroutine); then they come in order, and so does what is
// sent afterwards. Another connection served by the same loop is read meanwhile. A message sent with the
// handshake can pause too.
func TestPauseReading(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			paused := make(chan struct{}, 16)
			h := startWith(t, Config{NoEpoll: mode.noEpoll, ParkIdleLoops: mode.park, Pollers: 1}, false, mode.door, func(e *events) Handler {
				return &pausing{events: e, paused: paused}
			})
			batch := append(frame(true, rfc6455.OpText, []byte("pause"), true), frame(true, rfc6455.OpText, []byte("a"), true)...)
			batch = append(batch, frame(true, rfc6455.OpText, []byte("b"), true)...)
			for _, early := range []bool{false, true} {
				var c *rawClient
				if early {
					c = dialRaw(t, h.url, batch)
				} else {
					c = dialRaw(t, h.url, nil)
				}
				e := h.next(t)
				if !early {
					c.send(batch)
				}
				<-paused
				if ev := e.wait(t); ev != "text:pause" {
					t.Fatalf("got %q", ev)
				}
				// Another connection is read and answered while the first is paused.
				other := dialRaw(t, h.url, nil)
				oe := h.next(t)
				other.send(frame(true, rfc6455.OpText, []byte("hello"), true))
				if ev := oe.wait(t); ev != "text:hello" {
					t.Fatalf("the other connection got %q", ev)
				}
				c.send(frame(true, rfc6455.OpText, []byte("c"), true))
				other.send(frame(true, rfc6455.OpText, []byte("again"), true))
				if ev := oe.wait(t); ev != "text:again" {
					t.Fatalf("the other connection got %q", ev)
				}
				select {
				case ev := <-e.ch:
					t.Fatalf("a paused connection was handed %q", ev)
				default:
				}
				go e.c.ResumeReading()
				for _, want := range []string{"text:a", "text:b", "text:c"} {
					if ev := e.wait(t); ev != want {
						t.Fatalf("after resuming: got %q, want %q", ev, want)
					}
				}
				c.send(frame(true, rfc6455.OpText, []byte("d"), true))
				if ev := e.wait(t); ev != "text:d" {
					t.Fatalf("got %q", ev)
				}
				// Paused again, then the client hangs up: the Handler hears of it once resumed.
				c.send(frame(true, rfc6455.OpText, []byte("pause"), true))
				<-paused
				e.wait(t)
				c.nc.Close()
				time.Sleep(20 * time.Millisecond) // let the hang-up reach the server; nothing may come of it yet
				select {
				case ev := <-e.ch:
					t.Fatalf("a paused connection was handed %q", ev)
				default:
				}
				e.c.ResumeReading()
				if ev := e.wait(t); ev != "close" {
					t.Fatalf("got %q, want close", ev)
				}
				other.nc.Close()
				if ev := oe.wait(t); ev != "close" {
					t.Fatalf("got %q, want close", ev)
				}
			}
		})
	}
}
