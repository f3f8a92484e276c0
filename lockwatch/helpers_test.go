package lockwatch

import (
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// requireProgram skips the test when name is not installed, except in CI
// (CI=true or STEPUP_TEST_REQUIRE_ALL set), where it fails.
func requireProgram(t *testing.T, name string) {
	t.Helper()
	testenv.Program(t, name)
}
