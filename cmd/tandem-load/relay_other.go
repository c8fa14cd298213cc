//go:build !linux

package main

import "sync/atomic"

// eventLoops: relayEvents is not available here (it needs epoll); a goroutine drives each pair.
const eventLoops = false

func (g *generator) relayEvents([]*pair, []step, *atomic.Int32) {}
