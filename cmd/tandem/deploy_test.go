package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// unitSettings reads a systemd unit: each setting's values, in order.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a setting: %q", path, line)
		}
		settings[k] = append(settings[k], v)
	}
	return settings
}

// TestSystemdUnit checks deploy/tandem.service for what docs/deploy.md promises: a user of its own, only the
// capability to bind ports below 1024, its state in a state directory that is tandem's -data-dir, the usual
// hardening, and only TANDEM_* variables that are tandem's flags. Where systemd-analyze is installed, the unit
// must also pass its checks and rate "OK" or better on exposure.
func TestSystemdUnit(t *testing.T) {
	const path = "../../deploy/tandem.service"
	u := unitSettings(t, path)
	one := func(k string) string {
		if len(u[k]) != 1 {
			t.Errorf("%s: %d values, want one", k, len(u[k]))
			return ""
		}
		return u[k][0]
	}
	for k, want := range map[string]string{
		"DynamicUser": "yes", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "StateDirectory": "tandem", "UMask": "0077", "RestrictSUIDSGID": "yes",
		"ExecStart": "/usr/local/bin/tandem", "KillSignal": "SIGTERM",
	} {
		if got := one(k); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	var out, help strings.Builder
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, env := range u["Environment"] {
		for _, kv := range strings.Fields(env) {
			k, v, _ := strings.Cut(kv, "=")
			if !strings.Contains(help.String(), " "+k+" ") {
				t.Errorf("Environment=%s: %s is not one of tandem's variables", kv, k)
			}
			if k == "TANDEM_DATA_DIR" && v != "/var/lib/"+u["StateDirectory"][0] {
				t.Errorf("TANDEM_DATA_DIR=%s is not the state directory", v)
			}
		}
	}
	if !strings.Contains(strings.Join(u["Environment"], " "), "TANDEM_DATA_DIR=") {
		t.Error("the unit does not point -data-dir at the state directory")
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not installed: the unit is not verified by systemd")
		return
	}
	verify, _ := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(verify)), "\n") {
		// The binary is not installed where the unit runs it from on a test machine.
		if l != "" && !strings.Contains(l, "/usr/local/bin/tandem is not executable") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	sec, err := exec.Command("systemd-analyze", "security", "--offline=yes", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, sec)
	}
	m := regexp.MustCompile(`Overall exposure level for tandem.service: ([0-9.]+) (\w+)`).FindStringSubmatch(string(sec))
	if m == nil || (m[2] != "OK" && m[2] != "SAFE") {
		t.Errorf("systemd-analyze security: %v\n%s", m, sec)
	}
}
