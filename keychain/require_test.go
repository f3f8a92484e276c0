package keychain

import (
	"os"
	"os/exec"
	"testing"
)

// strict reports whether a missing prerequisite must fail the test (CI,
// or STEPUP_TEST_REQUIRE_ALL) rather than skip it.
func strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("STEPUP_TEST_REQUIRE_ALL") != ""
}

// missing skips the test, or fails it in CI.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if strict() {
		t.Fatalf("missing prerequisite: "+format, args...)
	}
	t.Skipf("missing prerequisite: "+format, args...)
}

// requireProgram returns the path of a program the test needs.
func requireProgram(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, "%s not found (scripts/apt-packages.txt)", name)
	}
	return p
}
