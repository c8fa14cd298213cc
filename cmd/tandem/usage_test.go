package main

import (
	"context"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"

	"tandem/internal/cli"
)

// TestUsageSections runs `tandem -h` and reads it as an operator would: every flag tandem registers is in one of
// the sections (none is left to "Other"), the sections come in their order, and each flag is one line with its
// TANDEM_* variable.
func TestUsageSections(t *testing.T) {
	var out, help strings.Builder
	err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out, &help)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h: %v", err)
	}
	text := help.String()
	line := regexp.MustCompile(`^  -([a-z0-9-]+)(?: [a-z]+)? +(TANDEM_[A-Z0-9_]+)  +\S.*$`)
	section, seen := "", map[string]string{}
	order := []string{}
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasSuffix(l, ":") && !strings.HasPrefix(l, " "):
			section = strings.TrimSuffix(l, ":")
			order = append(order, section)
		case strings.HasPrefix(l, "  -"):
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("not a flag line: %q", l)
				continue
			}
			if m[2] != cli.EnvName("TANDEM_", m[1]) {
				t.Errorf("-%s: variable %s", m[1], m[2])
			}
			seen[m[1]] = section
		case strings.HasPrefix(l, "    "):
			t.Errorf("a flag's text on a line of its own: %q", l)
		}
	}
	if s := usageSections; len(order) < 5 || order[0] != s[0].Title {
		t.Errorf("sections %q", order)
	}
	for name, sec := range seen {
		if sec == cli.OtherTitle || sec == "" {
			t.Errorf("-%s is in no section: add it to usageSections", name)
		}
	}
	for _, name := range []string{"addr", "tls-cert", "turn-secret", "max-conns", "node-id", "redis", "allowed-origins", "metrics-addr", "version"} {
		if seen[name] == "" {
			t.Errorf("-%s is not listed:\n%s", name, text)
		}
	}
	if len(seen) < 50 {
		t.Errorf("only %d flags listed:\n%s", len(seen), text)
	}
}
