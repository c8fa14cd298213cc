// Package cli holds what tandem's commands share: flags that can also be set from environment variables, the
// usage text that names those variables, and the structured logger chosen by -log-format and -log-level.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// EnvName is the environment variable of a flag: with prefix "TANDEM_", -send-queue is TANDEM_SEND_QUEUE.
func EnvName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse sets each flag of fs from its environment variable (read with getenv), then parses args, which win. It
// also makes fs's usage text: intro, then every flag with its variable and default.
func Parse(fs *flag.FlagSet, envPrefix, intro string, args []string, getenv func(string) string) error {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nEvery flag can also be set with the environment variable named beside it; a flag on the\ncommand line wins.\n\n", fs.Name(), strings.TrimSpace(intro))
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(w, "  -%s (%s)\n    \t%s (default %q)\n", f.Name, EnvName(envPrefix, f.Name), f.Usage, f.DefValue)
		})
	}
	return parse(fs, envPrefix, args, getenv)
}

// parse sets each flag of fs from its environment variable, then parses args.
func parse(fs *flag.FlagSet, envPrefix string, args []string, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvName(envPrefix, f.Name)
		if v := getenv(name); v != "" && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
}

// LevelTrace is the level below debug, for the libraries' own debug lines (pion's, see turnserver.LevelLibrary):
// -log-level debug shows tandem's decisions without them, -log-level trace with them. Lines at it say TRACE.
const LevelTrace = slog.LevelDebug - 4

// NewLogger returns a logger writing to w in format ("text" or "json") at level ("trace", "debug", "info",
// "warn", "error").
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if strings.EqualFold(level, "trace") {
		l = LevelTrace
	} else if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.LevelKey && len(groups) == 0 && a.Value.Any() == LevelTrace {
			a.Value = slog.StringValue("TRACE")
		}
		return a
	}}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format must be text or json, not %q", format)
}

// Main runs a command's run function with a context that SIGINT and SIGTERM cancel. A request for help ends
// well; any other error is printed after the command's name, and the process exits with status 1.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
