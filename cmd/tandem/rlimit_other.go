//go:build !unix

package main

import "errors"

func raiseOpenFileLimit() (int, error) { return 0, errors.New("not supported on this system") }
