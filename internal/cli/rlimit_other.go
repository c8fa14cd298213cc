//go:build !unix

package cli

import "errors"

// RaiseOpenFileLimit is not supported here.
func RaiseOpenFileLimit() (int, error) { return 0, errors.New("not supported on this system") }
