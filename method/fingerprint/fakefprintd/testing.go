//go:build linux

package fakefprintd

import (
	"context"
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/lockwatch/fakelogind"
)

// StartTest starts a private system-like bus with a fake fprintd on it
// (fingers enrolled as given), points DBUS_SYSTEM_BUS_ADDRESS at it for
// the test, and stops both at the end. The real fprintd needs a
// fingerprint reader, which this machine does not have.
func StartTest(ctx context.Context, t testing.TB, fingers ...string) (*fakelogind.Bus, *Fprintd) {
	t.Helper()
	testenv.Program(t, "dbus-daemon")
	bus, err := fakelogind.StartBus(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Address)
	f, err := Start(bus.Address, fingers...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return bus, f
}
