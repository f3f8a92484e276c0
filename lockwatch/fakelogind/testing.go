//go:build linux

package fakelogind

import (
	"context"
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// StartTest starts a private bus with a fake logind on it for a test,
// closing both when the test ends. A missing dbus-daemon fails the test in
// CI and skips it elsewhere (internal/testenv).
func StartTest(ctx context.Context, t testing.TB) (*Bus, *Logind) {
	t.Helper()
	testenv.Program(t, "dbus-daemon")
	bus, err := StartBus(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	ld, err := Start(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Close() })
	return bus, ld
}
