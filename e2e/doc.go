// Package e2e holds tandem's end-to-end browser tests: real calls between pages of the web client (and a
// tutorial-style client) in headless Chromium, through a real tandem server, inside a network namespace whose only
// interface is loopback. The package has no code outside its tests.
package e2e
