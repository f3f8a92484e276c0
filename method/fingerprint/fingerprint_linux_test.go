//go:build linux

package fingerprint_test

// These tests run the method against a fake fprintd on a private D-Bus
// (fakefprintd): the real fprintd needs a fingerprint reader, which this
// machine does not have. The fake speaks fprintd's API and records every
// call, so the tests can check that the reader is released on every path.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/method/fingerprint"
	"github.com/stepup-agent/stepup-agent/method/fingerprint/fakefprintd"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// enrolled enrolls the method against the fake and returns the credential.
func enrolled(t *testing.T, ctx context.Context, m *fingerprint.Method) *method.Credential {
	t.Helper()
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.(*api.FingerprintEnrollment).Fingers; !slices.Equal(got, []string{"right-index-finger"}) {
		t.Fatalf("enrollStart fingers = %v", got)
	}
	c, err := m.EnrollFinish(ctx, st, json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Label, "right-index-finger") {
		t.Fatalf("label %q does not name the finger", c.Label)
	}
	return c
}

// released checks that the reader was stopped and released after the
// verification.
func released(t *testing.T, f *fakefprintd.Fprintd) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.Claimed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	calls := f.Calls()
	if f.Claimed() || !slices.Contains(calls, "Release") {
		t.Fatalf("the reader was not released; calls: %v", calls)
	}
}

func verify(t *testing.T, ctx context.Context, m *fingerprint.Method, cred *method.Credential) error {
	t.Helper()
	st, ch, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		return err
	}
	if b, _ := json.Marshal(ch); string(b) != "{}" {
		t.Fatalf("challenge = %s, want {}", b)
	}
	resp, err := m.Wait(ctx, st)
	if err != nil {
		return err
	}
	_, err = m.Complete(ctx, st, []*method.Credential{cred}, resp)
	return err
}

func TestMatch(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	f.OnVerifyStart(func(int) { f.FingerSelected("any"); f.Status("verify-match", true) })
	if err := verify(t, ctx, m, cred); err != nil {
		t.Fatalf("a match failed: %v", err)
	}
	released(t, f)
	if m.AMR()[0] != "fpt" {
		t.Fatalf("amr %v", m.AMR())
	}
}

func TestNoMatchThenMatch(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	f.OnVerifyStart(func(n int) {
		if n == 1 {
			f.Status("verify-no-match", true)
		} else {
			f.Status("verify-match", true)
		}
	})
	if err := verify(t, ctx, m, cred); err != nil {
		t.Fatalf("no-match then match failed: %v", err)
	}
	calls := f.Calls()
	if n := count(calls, "VerifyStart"); n != 2 {
		t.Fatalf("VerifyStart %d times, want 2 (a new verification after the no-match); calls %v", n, calls)
	}
	released(t, f)
}

func TestNoMatchEveryTryFails(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{MaxTries: 3})
	cred := enrolled(t, ctx, m)
	f.OnVerifyStart(func(int) { f.Status("verify-no-match", true) })
	err := verify(t, ctx, m, cred)
	if !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("three no-matches: %v, want ErrVerificationFailed", err)
	}
	if n := count(f.Calls(), "VerifyStart"); n != 3 {
		t.Fatalf("VerifyStart %d times, want 3", n)
	}
	released(t, f)
}

func TestRetryScanShownThenMatch(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	gate := make(chan struct{})
	f.OnVerifyStart(func(int) {
		f.Status("verify-retry-scan", false)
		<-gate
		f.Status("verify-match", true)
	})
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.Status(st), "Touch the reader again") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := m.Status(st); !strings.Contains(s, "Touch the reader again") {
		t.Fatalf("status after retry-scan = %q", s)
	}
	close(gate)
	resp, err := m.Wait(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, resp); err != nil {
		t.Fatalf("match after retry-scan: %v", err)
	}
	released(t, f)
}

func TestTimeout(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{Timeout: 300 * time.Millisecond})
	cred := enrolled(t, ctx, m)
	err := verify(t, ctx, m, cred)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no touch: %v, want a timeout", err)
	}
	if !strings.Contains(err.Error(), "in time") {
		t.Fatalf("timeout message %q", err)
	}
	calls := f.Calls()
	if !slices.Contains(calls, "VerifyStop") {
		t.Fatalf("no VerifyStop after the timeout: %v", calls)
	}
	released(t, f)
}

func TestDeviceBusy(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	f.RefuseClaim("AlreadyInUse")
	err := verify(t, ctx, m, cred)
	var ae *api.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "in use by another program") || ae.Data.Hint == "" {
		t.Fatalf("busy reader: %v", err)
	}
}

func TestPermissionDenied(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	f.RefuseClaim("PermissionDenied")
	err := verify(t, ctx, m, cred)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNoPrompter || !strings.Contains(ae.Data.Hint, "polkit") {
		t.Fatalf("PermissionDenied: %v (hint %q)", err, hint(err))
	}
	// Availability says so too, so that routing falls back to the other
	// factors.
	m2 := fingerprint.New(fingerprint.Config{})
	if err := m2.Probe(ctx); err == nil || !strings.Contains(hint(err), "polkit") {
		t.Fatalf("Available under PermissionDenied: %v", err)
	}
}

func TestHangUpMidVerification(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := m.Wait(cctx, st); done <- err }()
	time.Sleep(100 * time.Millisecond)
	cancel() // the client hangs up
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after hang-up: %v", err)
	}
	calls := f.Calls()
	if !slices.Contains(calls, "VerifyStop") || !slices.Contains(calls, "Release") || f.Claimed() {
		t.Fatalf("after a hang-up the reader must be stopped and released; calls: %v", calls)
	}
}

func TestFprintdGoesAway(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	f.Close()
	resp, err := m.Wait(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Complete(ctx, st, []*method.Credential{cred}, resp)
	if err == nil || !strings.Contains(err.Error(), "went away") {
		t.Fatalf("fprintd gone: %v", err)
	}
}

// An impostor on the system bus emits a look-alike VerifyStatus
// "verify-match" from the device's path: it must not count.
func TestImpostorMatchIgnored(t *testing.T) {
	ctx := ctxT(t)
	bus, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{Timeout: 700 * time.Millisecond})
	cred := enrolled(t, ctx, m)
	imp, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	f.OnVerifyStart(func(int) {
		imp.Emit(fakefprintd.DevicePath, fakefprintd.DeviceIface+".VerifyStatus", "verify-match", true)
	})
	err = verify(t, ctx, m, cred)
	if err == nil {
		t.Fatal("an impostor's verify-match was accepted")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impostor: %v, want the verification to run on to its timeout", err)
	}
	released(t, f)
}

// A client cannot claim a touch: Complete with a made-up response before
// fprintd reports anything waits for fprintd, and fails without a match.
func TestCompleteCannotBeForged(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	cred := enrolled(t, ctx, m)
	f.OnVerifyStart(func(int) { f.Status("verify-no-match", true) })
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Complete(ctx, st, []*method.Credential{cred}, json.RawMessage(`{"matched": true}`))
	if !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("forged response: %v", err)
	}
}

func TestNotAvailable(t *testing.T) {
	ctx := ctxT(t)
	_, f := fakefprintd.StartTest(ctx, t)
	m := fingerprint.New(fingerprint.Config{})
	if _, _, err := m.EnrollStart(ctx, method.EnrollParams{}); err == nil || !strings.Contains(hint(err), "fprintd-enroll") {
		t.Fatalf("no fingers enrolled: %v (hint %q)", err, hint(err))
	}
	f.SetNoDevice(true)
	m2 := fingerprint.New(fingerprint.Config{})
	if err := m2.Probe(ctx); err == nil || !strings.Contains(err.Error(), "no fingerprint reader") {
		t.Fatalf("no reader: %v", err)
	}
	f.Close()
	m3 := fingerprint.New(fingerprint.Config{})
	if err := m3.Probe(ctx); err == nil || !strings.Contains(err.Error(), "fprintd is not running") {
		t.Fatalf("no fprintd: %v", err)
	}
}

// Available never waits on the bus: the first call answers at once and
// asks fprintd in the background; later calls see the answer.
func TestAvailableNeverBlocks(t *testing.T) {
	ctx := ctxT(t)
	fakefprintd.StartTest(ctx, t, "right-index-finger")
	m := fingerprint.New(fingerprint.Config{})
	if err := m.Available(); err == nil {
		t.Fatal("available before any check")
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Available() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := m.Available(); err != nil {
		t.Fatalf("a reader with a finger enrolled: %v", err)
	}
}

func hint(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Data.Hint
	}
	return ""
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}
