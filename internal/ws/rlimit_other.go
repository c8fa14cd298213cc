//go:build !unix

package ws

// openFileLimit: where there is no such limit to read, a generous one.
func openFileLimit() int { return 1 << 16 }
