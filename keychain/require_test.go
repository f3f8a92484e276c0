package keychain

import (
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// strict reports whether a missing prerequisite must fail the test (CI,
// or STEPUP_TEST_REQUIRE_ALL) rather than skip it.
func strict() bool {
	return testenv.Strict()
}

// missing skips the test, or fails it in CI.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, format, args...)
}

// requireProgram returns the path of a program the test needs.
func requireProgram(t testing.TB, name string) string {
	t.Helper()
	return testenv.Program(t, name)
}
