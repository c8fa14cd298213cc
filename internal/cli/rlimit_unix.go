//go:build unix

package cli

import "syscall"

// RaiseOpenFileLimit raises the soft limit on open files to the hard limit (each connection holds one) and
// returns the new limit.
func RaiseOpenFileLimit() (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return int(lim.Cur), nil
}
