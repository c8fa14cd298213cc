//go:build unix

package ws

import "syscall"

// openFileLimit is the process's limit on open files (its soft limit, which cmd/tandem raises to the hard one).
func openFileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 20
	}
	return int(lim.Cur)
}
