//go:build linux

package main

import (
	"os"
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// The short versions of the load and chaos runs (docs/RELIABILITY.md), so
// that they cannot rot: seconds, not minutes. Each builds the agent of
// this tree and fails on any wrong answer or violation.

func TestLoadShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an agent")
	}
	if err := loadMain([]string{"-conns", "8", "-n", "4000", "-pipeline", "4", "-slow", "4", "-slow-every", "200ms"}); err != nil {
		t.Fatal(err)
	}
}

func TestChaosShortFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an agent")
	}
	if err := chaosMain([]string{"-kills", "5", "-keychain", "file", "-max-delay", "300ms"}); err != nil {
		t.Fatal(err)
	}
}

func TestChaosShortSecretService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an agent")
	}
	if os.Getenv("STEPUP_TEST_SECRET_SERVICE") == "" {
		testenv.Missing(t, "no Secret Service (run through scripts/test.sh, which starts gnome-keyring)")
	}
	// A private gnome-keyring: the session's may hold another agent's
	// items (an audit head of another log reads as a chain break).
	if err := chaosMain([]string{"-kills", "5", "-keychain", "secretservice", "-own-keyring", "-max-delay", "300ms"}); err != nil {
		t.Fatal(err)
	}
}
