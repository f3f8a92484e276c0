package lockwatch

import (
	"os"
	"os/exec"
	"testing"
)

// requireProgram skips the test when name is not installed, except in CI
// (CI=true or STEPUP_TEST_REQUIRE_ALL set), where it fails.
func requireProgram(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if os.Getenv("CI") == "true" || os.Getenv("STEPUP_TEST_REQUIRE_ALL") != "" {
		t.Fatalf("%s is not installed (scripts/apt-packages.txt lists its package)", name)
	}
	t.Skipf("%s is not installed", name)
}
