package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tandem/client"
	"tandem/protocol"
)

// Log in and list who is online.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://localhost:9090/", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice", ""); errors.Is(err, client.ErrNameTaken) {
		fmt.Println("somebody else is alice")
		return
	} else if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.SendUsers(ctx, "", 20); err != nil {
		fmt.Println(err)
		return
	}
	m, err := c.WaitFor(ctx, protocol.TypeUsers)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, u := range m.Users {
		fmt.Println(u.Name, u.Busy, u.Echo)
	}
}
