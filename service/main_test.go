package service

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as the program systemd-socket-activate
// starts: with STEPUP_SERVICE_TEST_CHILD set (passed with -E), it runs that
// child instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("STEPUP_SERVICE_TEST_CHILD") {
	case "":
		os.Exit(m.Run())
	case "serve":
		os.Exit(childServe())
	default:
		os.Exit(2)
	}
}
