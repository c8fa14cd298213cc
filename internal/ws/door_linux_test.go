package ws

import (
	"syscall"
	"testing"

	"tandem/internal/rfc6455"
)

// TestDoorResumesAfterAcceptFails: when accept fails for want of descriptors the listener leaves the loop for a
// while; clients that connect meanwhile wait in the backlog and are served once it is back.
func TestDoorResumesAfterAcceptFails(t *testing.T) {
	h := startDoor(t, Config{}, true, true)
	h.srv.mu.Lock()
	d := h.srv.doors[0]
	h.srv.mu.Unlock()
	d.mu.Lock()
	d.pauseLocked(syscall.EMFILE)
	paused := d.paused
	d.mu.Unlock()
	if !paused {
		t.Fatal("the listener was not paused")
	}
	c := dialRaw(t, h.url, nil) // waits in the backlog until the pause ends, then is upgraded
	c.send(frame(true, rfc6455.OpText, []byte("back"), true))
	c.expectText("back")
	if ev := h.next(t).wait(t); ev != "text:back" {
		t.Fatalf("got %q", ev)
	}
}
