package service

import (
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// requireProgram skips the test when name is not installed, except in CI
// (CI=true or STEPUP_TEST_REQUIRE_ALL set), where a missing prerequisite
// fails it.
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	return testenv.Program(t, name)
}
