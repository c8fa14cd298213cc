package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/servertest"
	"tandem/protocol"
)

// TestMain lets a test run this test binary as the real tandem command (main, signals and exit code included).
func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSignalShutsDownGracefully runs tandem as a process, puts two users in a call, sends SIGTERM, and checks
// what users and operators see: both users are told the call is over, their connections close with "going away",
// and tandem exits with status 0 within a few seconds.
func TestSignalShutsDownGracefully(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		"TANDEM_TEST_RUN_MAIN=1",
		"TANDEM_ADDR=127.0.0.1:0",
		"TANDEM_TURN_ADDR=off",
		"TANDEM_ECHO=false",
		"TANDEM_DATA_DIR="+t.TempDir(),
		"TANDEM_LOG_LEVEL=warn",
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	// tandem prints the address to open once it listens.
	url := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`open http://(127\.0\.0\.1:\d+)/`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				url <- "ws://" + m[1] + "/"
			}
		}
	}()
	var addr string
	select {
	case addr = <-url:
	case err := <-exited:
		t.Fatalf("tandem exited at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("tandem did not say where it listens")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	users := make([]*client.Client, 2)
	for i, name := range []string{"alice", "bob"} {
		users[i] = servertest.Login(t, ctx, addr, name, nil)
	}
	if err := users[0].SendOffer(ctx, "bob", json.RawMessage(`{"type":"offer","sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := users[1].WaitFor(ctx, protocol.TypeOffer); err != nil {
		t.Fatal(err)
	}
	if _, err := users[0].WaitFor(ctx, protocol.TypeRinging); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range users {
		m, err := c.Read(ctx)
		if err != nil || m.Type != protocol.TypeLeave || m.Reason != protocol.ReasonShutdown {
			t.Fatalf("got %+v, %v; want a leave for the shutdown", m, err)
		}
		if _, err := c.Read(ctx); !errors.Is(err, client.ErrGoingAway) {
			t.Fatalf("got %v; want the connection closed as going away", err)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("tandem exited with %v, want status 0", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("tandem did not exit within 8s of SIGTERM")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}
