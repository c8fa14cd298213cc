//go:build !linux

package main

import "errors"

const defaultEngine = "goroutines"

// startLoops is the loop engine, which needs Linux (epoll, recvmmsg, sendmmsg).
func startLoops(*config, []*endpoint) (engine, error) {
	return nil, errors.New("-engine loops needs Linux; use -engine goroutines")
}
