//go:build !linux

package password

// noNewPrivs is Linux's; elsewhere it is false.
func noNewPrivs() bool { return false }
