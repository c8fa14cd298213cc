//go:build !linux

package main

import "os"

// Elsewhere the password is read as a line of standard input (echoed, if it is a terminal).
func isTerminal(*os.File) bool { return false }

func readNoEcho(*os.File) (string, error) { return "", nil }
