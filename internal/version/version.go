// Package version says which build of tandem is running: the version stamped at build time with
//
//	go build -ldflags "-X tandem/internal/version.stamped=v1.4.0" ./cmd/tandem
//
// or, without a stamp, what the Go toolchain recorded in the binary (the module version of `go install
// tandem/cmd/tandem@v1.4.0`, or the VCS revision of a build from a checkout).
package version

import (
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// stamped is set at build time with -ldflags -X (see the package comment); empty when it was not.
var stamped string

// String returns tandem's version: the stamp, else the module version, else "devel" followed by the first 12
// hex digits of the VCS revision (and "-dirty" when the checkout had changes), else "devel".
func String() string {
	if v := strings.TrimSpace(stamped); v != "" {
		return v
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo is String's fallback, for a binary built without a stamp.
func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	v := "devel-" + rev[:min(len(rev), 12)]
	if dirty {
		v += "-dirty"
	}
	return v
}

// Long is what `tandem -version` prints: the version, the Go version and the platform.
func Long(command string) string {
	return command + " " + String() + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}

// Collector is the metric tandem_build_info, always 1, whose labels say which build is running.
func Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "tandem_build_info",
		Help:        "Always 1; its labels say which build of tandem is running (version, Go version).",
		ConstLabels: prometheus.Labels{"version": String(), "goversion": runtime.Version()},
	}, func() float64 { return 1 })
}
