package main

import "tandem/internal/cli"

// usageSections groups tandem's flags in `tandem -h`, by name: a flag goes to the section that names it, else
// to the one with the longest prefix of it ("turn-*"). Registering a flag that no section takes fails
// TestUsageSections: add it here.
var usageSections = []cli.Section{
	{Title: "Basics", Flags: []string{"addr", "public-url", "data-dir", "echo", "echo-name", "echo-limit"}},
	{Title: "HTTPS", Flags: []string{"tls-*", "acme-*", "http-redirect", "qr"}},
	{Title: "TURN (STUN/TURN server; docs/networks.md)", Flags: []string{"turn-*"}},
	{Title: "Limits (docs/limits.md)", Flags: []string{
		"max-*", "rate", "burst", "send-queue", "pollers", "ping-interval", "idle-timeout", "login-timeout",
		"message-timeout", "limit-loopback", "shutdown-timeout", "echo-max-calls", "call-cooldown", "http-*",
	}},
	{Title: "Cluster (docs/cluster.md)", Flags: []string{"redis", "redis-*", "node-id", "cluster-*", "resume-grace", "drain-window"}},
	{Title: "Access (docs/access.md)", Flags: []string{"auth", "allowed-origins", "trusted-proxies", "embed-origins", "access-*", "auth-*", "invite-*", "password*", "users-file"}},
	{Title: "Observability (docs/deploy.md)", Flags: []string{"log-*", "metrics-addr", "pprof", "version"}},
}
