//go:build !linux

package e2e

import "errors"

func runIsolated() (int, error) {
	return 0, errors.New("network namespaces exist on Linux only")
}

func loopbackUp() error { return errors.New("network namespaces exist on Linux only") }

func onlyLoopback() error { return errors.New("network namespaces exist on Linux only") }
