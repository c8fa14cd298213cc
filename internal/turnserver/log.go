package turnserver

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// LevelLibrary is the level of pion's debug and info lines: below slog's debug, so that -log-level debug shows
// tandem's own decisions (allocations, refusals, limits) without pion's line for every packet and permission;
// -log-level trace shows them too. pion's trace lines are dropped.
const LevelLibrary = slog.LevelDebug - 4

// pionLogs adapts an slog.Logger to pion's logging interfaces. pion's errors are mostly about single packets
// (a client that went away, a refused permission), so they are logged as warnings; info and debug at
// LevelLibrary.
type pionLogs struct{ log *slog.Logger }

func (p pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{p.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(string)                      {}
func (l pionLogger) Tracef(string, ...any)             {}
func (l pionLogger) Debug(msg string)                  { l.logf(LevelLibrary, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(LevelLibrary, format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf(LevelLibrary, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(LevelLibrary, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l pionLogger) Error(msg string)                  { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelWarn, format, args...) }
