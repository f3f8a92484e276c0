package keychain

import (
	"os"
	"testing"
)

// TestMain keeps every test's default state directory (auto's remembered
// choice, the file backend) out of the real home.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keychain-state")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_STATE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
