//go:build linux

// Package fakefprintd is test support: a fake fprintd
// (net.reactivated.Fprint Manager and one Device) on a private
// system-like bus (fakelogind.StartBus). The real fprintd needs a
// fingerprint reader, which test machines do not have; this fake speaks
// the same D-Bus API, records every call, and lets a test emit
// VerifyStatus results, refuse with fprintd's errors, or leave the bus.
package fakefprintd

import (
	"context"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

// Names, as fprintd uses them.
const (
	Name         = "net.reactivated.Fprint"
	ManagerPath  = dbus.ObjectPath("/net/reactivated/Fprint/Manager")
	DevicePath   = dbus.ObjectPath("/net/reactivated/Fprint/Device/0")
	ManagerIface = "net.reactivated.Fprint.Manager"
	DeviceIface  = "net.reactivated.Fprint.Device"
	errPrefix    = "net.reactivated.Fprint.Error."
)

// Fprintd is the fake daemon.
type Fprintd struct {
	conn *dbus.Conn

	mu sync.Mutex
	// Fingers are the enrolled fingers ListEnrolledFingers returns.
	fingers []string
	// noDevice makes GetDefaultDevice fail with NoSuchDevice.
	noDevice bool
	// claimErr / verifyErr, when set, are fprintd error names
	// ("PermissionDenied", "AlreadyInUse") returned by Claim / VerifyStart.
	claimErr, verifyErr string
	claimed             bool
	verifying           bool
	calls               []string
	notify              chan string
	// onVerifyStart, when set, runs after each VerifyStart (n counts
	// them from 1), typically to emit results.
	onVerifyStart func(n int)
	starts        int
}

// Start connects to the bus at address, exports the Manager and the
// Device, and takes fprintd's name.
func Start(address string, fingers ...string) (*Fprintd, error) {
	conn, err := dbus.Connect(address)
	if err != nil {
		return nil, err
	}
	f := &Fprintd{conn: conn, fingers: fingers, notify: make(chan string, 256)}
	if err := conn.Export(manager{f}, ManagerPath, ManagerIface); err != nil {
		conn.Close()
		return nil, err
	}
	if err := conn.Export(device{f}, DevicePath, DeviceIface); err != nil {
		conn.Close()
		return nil, err
	}
	reply, err := conn.RequestName(Name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		conn.Close()
		return nil, fmt.Errorf("cannot own %s: %v (reply %d)", Name, err, reply)
	}
	return f, nil
}

// Close leaves the bus (fprintd going away).
func (f *Fprintd) Close() error { return f.conn.Close() }

// SetFingers sets the enrolled fingers.
func (f *Fprintd) SetFingers(fingers ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fingers = fingers
}

// SetNoDevice makes GetDefaultDevice report no reader.
func (f *Fprintd) SetNoDevice(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noDevice = v
}

// RefuseClaim makes Claim fail with fprintd's error name (e.g.
// "PermissionDenied", "AlreadyInUse"); "" accepts again.
func (f *Fprintd) RefuseClaim(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claimErr = name
}

// RefuseVerify makes VerifyStart fail with fprintd's error name.
func (f *Fprintd) RefuseVerify(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verifyErr = name
}

// OnVerifyStart runs fn (in its own goroutine) after every VerifyStart,
// with the count of VerifyStarts so far.
func (f *Fprintd) OnVerifyStart(fn func(n int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onVerifyStart = fn
}

// Status emits VerifyStatus(result, done) from the device, as fprintd does.
func (f *Fprintd) Status(result string, done bool) error {
	return f.conn.Emit(DevicePath, DeviceIface+".VerifyStatus", result, done)
}

// FingerSelected emits VerifyFingerSelected.
func (f *Fprintd) FingerSelected(finger string) error {
	return f.conn.Emit(DevicePath, DeviceIface+".VerifyFingerSelected", finger)
}

// Calls returns the device and manager calls so far, in order.
func (f *Fprintd) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Claimed reports whether the device is claimed now.
func (f *Fprintd) Claimed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.claimed
}

// WaitCall waits until a call named name happens (or has happened since
// the last WaitCall that consumed it).
func (f *Fprintd) WaitCall(ctx context.Context, name string) error {
	for {
		select {
		case c := <-f.notify:
			if c == name {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("fake fprintd: no %s call (calls: %v): %w", name, f.Calls(), ctx.Err())
		}
	}
}

func (f *Fprintd) record(name string) {
	f.calls = append(f.calls, name)
	select {
	case f.notify <- name:
	default:
	}
}

func fprintErr(name, msg string) *dbus.Error {
	return dbus.NewError(errPrefix+name, []any{msg})
}

type manager struct{ f *Fprintd }

func (m manager) GetDefaultDevice() (dbus.ObjectPath, *dbus.Error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.record("GetDefaultDevice")
	if m.f.noDevice {
		return "", fprintErr("NoSuchDevice", "No devices available")
	}
	return DevicePath, nil
}

func (m manager) GetDevices() ([]dbus.ObjectPath, *dbus.Error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.record("GetDevices")
	if m.f.noDevice {
		return nil, nil
	}
	return []dbus.ObjectPath{DevicePath}, nil
}

type device struct{ f *Fprintd }

func (d device) ListEnrolledFingers(user string) ([]string, *dbus.Error) {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	d.f.record("ListEnrolledFingers")
	if d.f.claimErr == "PermissionDenied" {
		return nil, fprintErr("PermissionDenied", "Not Authorized: net.reactivated.fprint.device.verify")
	}
	if len(d.f.fingers) == 0 {
		return nil, fprintErr("NoEnrolledPrints", "Failed to discover prints")
	}
	return append([]string(nil), d.f.fingers...), nil
}

func (d device) Claim(user string) *dbus.Error {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	d.f.record("Claim")
	switch {
	case d.f.claimErr == "PermissionDenied":
		return fprintErr("PermissionDenied", "Not Authorized: net.reactivated.fprint.device.verify")
	case d.f.claimErr != "":
		return fprintErr(d.f.claimErr, "Device was already claimed")
	case d.f.claimed:
		return fprintErr("AlreadyInUse", "Device was already claimed")
	}
	d.f.claimed = true
	return nil
}

func (d device) Release() *dbus.Error {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	d.f.record("Release")
	if !d.f.claimed {
		return fprintErr("ClaimDevice", "Device was not claimed before use")
	}
	d.f.claimed = false
	d.f.verifying = false
	return nil
}

func (d device) VerifyStart(finger string) *dbus.Error {
	d.f.mu.Lock()
	d.f.record("VerifyStart")
	if !d.f.claimed {
		d.f.mu.Unlock()
		return fprintErr("ClaimDevice", "Device was not claimed before use")
	}
	if d.f.verifyErr != "" {
		name := d.f.verifyErr
		d.f.mu.Unlock()
		return fprintErr(name, "refused")
	}
	if d.f.verifying {
		d.f.mu.Unlock()
		return fprintErr("AlreadyInUse", "Verification already in progress")
	}
	d.f.verifying = true
	d.f.starts++
	n, fn := d.f.starts, d.f.onVerifyStart
	d.f.mu.Unlock()
	if fn != nil {
		go fn(n)
	}
	return nil
}

func (d device) VerifyStop() *dbus.Error {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	d.f.record("VerifyStop")
	d.f.verifying = false
	return nil
}
