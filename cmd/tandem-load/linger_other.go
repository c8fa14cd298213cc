//go:build !unix

package main

import "tandem/client"

// resetClient closes c at once; a TCP reset needs SO_LINGER, set here only on Unix.
func resetClient(c *client.Client) { _ = c.CloseNow() }
