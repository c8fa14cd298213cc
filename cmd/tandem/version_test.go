package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"tandem/internal/version"
)

// TestVersionFlag: -version prints the version, the Go version and the platform on one line, and exits without
// listening anywhere (the address given is taken by nothing afterwards: run returns at once).
func TestVersionFlag(t *testing.T) {
	var out, logs bytes.Buffer
	err := run(context.Background(), []string{"-version", "-addr", "127.0.0.1:1"}, func(string) string { return "" }, &out, &logs)
	if err != nil {
		t.Fatal(err)
	}
	want := "tandem " + version.String() + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if out.String() != want {
		t.Errorf("-version printed %q, want %q", out.String(), want)
	}
	if logs.Len() != 0 {
		t.Errorf("-version logged %q", logs.String())
	}
}

// TestVersionStamp builds tandem as a release would, with the version stamped by -ldflags, and runs the binary's
// -version; the variable is also honoured (TANDEM_VERSION=true).
func TestVersionStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "tandem")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X tandem/internal/version.stamped=v9.8.7-test", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "tandem v9.8.7-test (go") {
		t.Errorf("-version of a stamped build: %q", out)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"TANDEM_VERSION=true"}
	out, err = cmd.Output()
	if err != nil || !strings.HasPrefix(string(out), "tandem v9.8.7-test ") {
		t.Errorf("TANDEM_VERSION=true: %q, %v", out, err)
	}
}
