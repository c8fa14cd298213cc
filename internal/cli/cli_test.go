package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	env := map[string]string{"TANDEM_SEND_QUEUE": "42", "TANDEM_NAME": "from-env"}
	fs := flag.NewFlagSet("tandem", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	q := fs.Int("send-queue", 1, "queue")
	name := fs.String("name", "default", "name")
	addr := fs.String("addr", ":9090", "address")
	if err := Parse(fs, "TANDEM_", "tandem is a test.", []string{"-name", "from-flag"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *q != 42 || *name != "from-flag" || *addr != ":9090" {
		t.Fatalf("send-queue=%d name=%q addr=%q", *q, *name, *addr)
	}
	fs.Usage()
	if !strings.Contains(out.String(), "-send-queue (TANDEM_SEND_QUEUE)") || !strings.Contains(out.String(), "tandem is a test.") {
		t.Fatalf("usage:\n%s", out.String())
	}

	fs = flag.NewFlagSet("tandem", flag.ContinueOnError)
	fs.Int("send-queue", 1, "queue")
	err := Parse(fs, "TANDEM_", "", nil, func(k string) string { return map[string]string{"TANDEM_SEND_QUEUE": "many"}[k] })
	if err == nil || !strings.Contains(err.Error(), "TANDEM_SEND_QUEUE") {
		t.Fatalf("a bad variable: %v", err)
	}
}

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLogger(&b, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if got := b.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) {
		t.Fatalf("got %q", got)
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"text", "loud"}} {
		if _, err := NewLogger(&b, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestUsageSections(t *testing.T) {
	fs := flag.NewFlagSet("tandem", flag.ContinueOnError)
	fs.String("addr", ":9090", "address to listen on")
	fs.Bool("tls-self-signed", false, "LAN mode")
	fs.Int("turn-max-allocations", 8, "allocations")
	fs.Duration("turn-ttl", 0, "how long")
	fs.Int("surprise", 0, "a flag no section names")
	sections := []Section{
		{Title: "Basics", Flags: []string{"addr"}},
		{Title: "HTTPS", Flags: []string{"tls-*"}},
		{Title: "Limits", Flags: []string{"turn-max-*"}},
		{Title: "TURN", Flags: []string{"turn-*"}},
	}
	for name, want := range map[string]string{"addr": "Basics", "tls-self-signed": "HTTPS", "turn-max-allocations": "Limits",
		"turn-ttl": "TURN", "surprise": OtherTitle} {
		if got := SectionOf(sections, name); got != want {
			t.Errorf("SectionOf(%q) = %q, want %q", name, got, want)
		}
	}
	var b bytes.Buffer
	Usage(&b, fs, "TANDEM_", "tandem is a test.", sections)
	want := `Usage: tandem [flags]

tandem is a test.

Every flag can also be set with the environment variable beside it; a flag on the command line
wins.

Basics:
  -addr string  TANDEM_ADDR  address to listen on (default ":9090")

HTTPS:
  -tls-self-signed  TANDEM_TLS_SELF_SIGNED  LAN mode

Limits:
  -turn-max-allocations int  TANDEM_TURN_MAX_ALLOCATIONS  allocations (default 8)

TURN:
  -turn-ttl duration  TANDEM_TURN_TTL  how long (default 0s)

Other:
  -surprise int  TANDEM_SURPRISE  a flag no section names (default 0)
`
	if b.String() != want {
		t.Errorf("usage:\n%s\nwant:\n%s", b.String(), want)
	}
}
