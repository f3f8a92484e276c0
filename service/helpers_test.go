package service

import (
	"os"
	"os/exec"
	"testing"
)

// requireProgram skips the test when name is not installed, except in CI
// (CI=true or STEPUP_TEST_REQUIRE_ALL set), where a missing prerequisite
// fails it.
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" || os.Getenv("STEPUP_TEST_REQUIRE_ALL") != "" {
		t.Fatalf("%s is not installed (scripts/apt-packages.txt lists the package): %v", name, err)
	}
	t.Skipf("%s is not installed: %v", name, err)
	return ""
}
