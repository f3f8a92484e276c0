package keychain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// flaky is a backend that can be made to fail or to hang, to test the
// resilient store's logic on its own; the real faults (a killed or frozen
// gnome-keyring) are in secretservice_linux_test.go.
type flaky struct {
	*Memory
	down  atomic.Bool
	hang  atomic.Bool
	calls atomic.Int64
	delay atomic.Int64 // nanoseconds each call takes (a slow keychain)
}

func (f *flaky) check(ctx context.Context) error {
	f.calls.Add(1)
	if d := time.Duration(f.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ErrUnavailable
		}
	}
	if f.hang.Load() {
		// Real backends bound each call themselves (2s); so does this
		// one, at 100ms, when the caller did not.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return fmt.Errorf("%w: flaky: %w within the deadline", ErrUnavailable, errNoAnswer)
	}
	if f.down.Load() {
		return ErrUnavailable
	}
	return nil
}

func (f *flaky) Get(ctx context.Context, k, n string) ([]byte, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return f.Memory.Get(ctx, k, n)
}

func (f *flaky) Put(ctx context.Context, k, n string, d []byte) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.Memory.Put(ctx, k, n, d)
}

func (f *flaky) Delete(ctx context.Context, k, n string) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.Memory.Delete(ctx, k, n)
}

func (f *flaky) List(ctx context.Context, k string) ([]string, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return f.Memory.List(ctx, k)
}

func (f *flaky) Backend() string { return "flaky" }

func TestResilientOutageAndRecovery(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	fb.Memory.Put(ctx, KindKey, "signing", []byte("seed"))
	fb.Memory.Put(ctx, KindToken, "old", []byte("t"))
	core, logs := observer.New(zap.InfoLevel)
	r, err := newResilient(ctx, fb, Options{Logger: zap.New(core), Timeout: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var st Store = r
	if _, ok := st.(Availability); !ok {
		t.Fatal("the resilient store does not implement Availability")
	}
	if _, ok := st.(Warner); !ok {
		t.Fatal("the resilient store does not implement Warner")
	}

	// Loaded at open: reads no longer touch the backend.
	before := fb.calls.Load()
	if got, err := r.Get(ctx, KindKey, "signing"); err != nil || string(got) != "seed" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if fb.calls.Load() != before {
		t.Fatal("a read went to the backend")
	}

	// The backend goes away: writes go on in memory, logged once.
	fb.down.Store(true)
	for _, n := range []string{"a", "b", "c"} {
		if err := r.Put(ctx, KindToken, n, []byte(n)); err != nil {
			t.Fatalf("Put while down = %v", err)
		}
	}
	r.Delete(ctx, KindToken, "old")
	if r.Available() {
		t.Fatal("Available() after a failed write")
	}
	if w := r.Warning(); !strings.Contains(w, "not answering") {
		t.Fatalf("Warning() while down = %q", w)
	}
	if got, _ := r.Get(ctx, KindToken, "b"); string(got) != "b" {
		t.Fatal("the mirror lost a write made while down")
	}
	if n := logs.FilterMessageSnippet("not answering").Len(); n != 1 {
		t.Fatalf("outage logged %d times, want once", n)
	}

	// Back: the prober writes the puts and the delete, then reports it.
	fb.down.Store(false)
	testenv.WaitFor(t, "recovery", 3*time.Second, r.Available)
	for _, n := range []string{"a", "b", "c"} {
		if got, err := fb.Memory.Get(ctx, KindToken, n); err != nil || string(got) != n {
			t.Fatalf("item %s not written through after recovery: %q, %v", n, got, err)
		}
	}
	if _, err := fb.Memory.Get(ctx, KindToken, "old"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a delete made while down was not written through")
	}
	if r.Warning() != "" {
		t.Fatalf("Warning() after recovery = %q", r.Warning())
	}
	if logs.FilterMessageSnippet("answers again").Len() != 1 {
		t.Fatal("recovery not logged")
	}
}

// A keychain that comes back slow (gnome-keyring rewrites its file for
// each item) takes a while over the changes made while it was down. A
// write meanwhile waits for one of those writes, not for all of them, and
// the store says it is available only once every change, the new one too,
// is in the backend.
func TestResilientRecoveryDoesNotHoldWriters(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	r, err := newResilient(ctx, fb, Options{Timeout: time.Second, ProbeInterval: 20 * time.Millisecond}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fb.down.Store(true)
	const n = 40
	for i := range n {
		r.Put(ctx, KindToken, fmt.Sprint("t", i), []byte("v"))
	}
	fb.delay.Store(int64(50 * time.Millisecond)) // the flush takes 2 s
	fb.down.Store(false)
	testenv.WaitFor(t, "the flush to start", 3*time.Second, func() bool {
		k, _ := fb.Memory.List(ctx, KindToken)
		return len(k) > 0
	})
	start := time.Now()
	if err := r.Delete(ctx, KindToken, "t39"); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, KindConsumed, "jti", []byte("exp")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("two writes during the flush took %s: they waited for the whole flush", d)
	}
	if r.Available() {
		t.Fatal("Available() while changes wait to be written")
	}
	// A request that changed state waits for the flush, which writes its
	// change too, and learns that it is stored.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !r.WaitFlushed(wctx) || !r.Available() {
		t.Fatal("WaitFlushed returned before the flush wrote every change")
	}
	testenv.WaitFor(t, "recovery", 10*time.Second, r.Available)
	names, _ := fb.Memory.List(ctx, KindToken)
	if len(names) != n-1 || slices.Contains(names, "t39") {
		t.Fatalf("backend holds %d tokens (t39 among them: %v), want %d without t39", len(names), slices.Contains(names, "t39"), n-1)
	}
	if got, err := fb.Memory.Get(ctx, KindConsumed, "jti"); err != nil || string(got) != "exp" {
		t.Fatalf("the write made during the flush is not in the backend: %q, %v", got, err)
	}
}

// A keychain that is not answering is not waited for: the change stays
// in memory and the request goes on.
func TestResilientWaitFlushedDoesNotWaitForADeadKeychain(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	r, err := newResilient(ctx, fb, Options{Timeout: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fb.down.Store(true)
	r.Put(ctx, KindLimit, "totp", []byte("1"))
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if r.WaitFlushed(wctx) {
		t.Fatal("WaitFlushed says written with the keychain down")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("WaitFlushed waited %s for a keychain that is down", d)
	}
}

func TestResilientHangingBackendIsBounded(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	r, err := newResilient(ctx, fb, Options{Timeout: 100 * time.Millisecond, ProbeInterval: time.Hour}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fb.hang.Store(true)
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Put(ctx, KindLimit, "totp", []byte("1"))
			r.Get(ctx, KindLimit, "totp")
		}()
	}
	wg.Wait()
	// One write waits for the deadline; the others find it down and go on.
	if d := time.Since(start); d > time.Second {
		t.Fatalf("10 writes to a hanging backend took %s", d)
	}
	if r.Available() {
		t.Fatal("Available() with a hanging backend")
	}
	// Close gives up on a backend that still hangs, within its bound.
	fb.hang.Store(true)
	start = time.Now()
	r.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %s", d)
	}
}

func TestResilientCloseFlushes(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	r, err := newResilient(ctx, fb, Options{ProbeInterval: time.Hour}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	fb.down.Store(true)
	r.Put(ctx, KindConsumed, "jti", []byte("exp"))
	fb.down.Store(false)
	r.Close()
	if got, err := fb.Memory.Get(ctx, KindConsumed, "jti"); err != nil || string(got) != "exp" {
		t.Fatalf("Close did not write the pending change: %q, %v", got, err)
	}
}

// A keychain that is there but slow over its first calls (gnome-keyring
// just started) is waited for at open, up to LoadTimeout; one that
// refuses is an error at once, and one still silent at LoadTimeout too.
func TestResilientOpenWaitsForASlowStart(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	fb.Memory.Put(ctx, KindToken, "t", []byte("v"))
	fb.hang.Store(true)
	time.AfterFunc(300*time.Millisecond, func() { fb.hang.Store(false) })
	opts := Options{Timeout: 100 * time.Millisecond, LoadTimeout: 3 * time.Second, ProbeInterval: time.Hour}.withDefaults()
	r, err := newResilient(ctx, fb, opts, "")
	if err != nil {
		t.Fatalf("open of a keychain slow for 300ms: %v", err)
	}
	if got, err := r.Get(ctx, KindToken, "t"); err != nil || string(got) != "v" {
		t.Fatalf("Get after a slow start = %q, %v", got, err)
	}
	r.Close()

	fb.hang.Store(true)
	start := time.Now()
	opts.LoadTimeout = 500 * time.Millisecond
	if _, err := newResilient(ctx, fb, opts, ""); !errors.Is(err, errNoAnswer) {
		t.Fatalf("open of a keychain that never answers: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("open gave up after %s, LoadTimeout is 500ms", d)
	}
	fb.hang.Store(false)
	fb.down.Store(true)
	start = time.Now()
	if _, err := newResilient(ctx, fb, opts, ""); err == nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("open of a keychain that refuses: %v after %s, want an error at once", err, time.Since(start))
	}
}

func TestResilientLoadFailureIsAnError(t *testing.T) {
	fb := &flaky{Memory: NewMemory()}
	fb.down.Store(true)
	if _, err := newResilient(context.Background(), fb, Options{}.withDefaults(), ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("newResilient on a down backend = %v", err)
	}
}

func TestResilientLoadsOtherKindsOnFirstUse(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	fb.Memory.Put(ctx, "extra", "x", []byte("1"))
	r, err := newResilient(ctx, fb, Options{}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := r.Get(ctx, "extra", "x"); err != nil || string(got) != "1" {
		t.Fatalf("Get of a kind outside Kinds = %q, %v", got, err)
	}
}

func TestOpenUnknownBackend(t *testing.T) {
	if _, err := Open(context.Background(), "vault", Options{}); err == nil || !strings.Contains(err.Error(), "use one of") {
		t.Fatalf("Open(vault) = %v", err)
	}
}

// Kinds outside Kinds are set by other programs while the agent runs (the
// delivery secrets: secret-tool store ... kind delivery name
// smtp-password; docs/methods.md says a changed password applies without a
// restart). Get reads them from the backend each time, and answers from
// the mirror while the backend is down.
func TestResilientReadsOtherProgramsKindsThrough(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	r, err := newResilient(ctx, fb, Options{ProbeInterval: time.Hour}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Get(ctx, "delivery", "smtp-password"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get before the secret is stored = %v", err)
	}
	fb.Memory.Put(ctx, "delivery", "smtp-password", []byte("first"))
	if got, err := r.Get(ctx, "delivery", "smtp-password"); err != nil || string(got) != "first" {
		t.Fatalf("Get after another program stored it = %q, %v; want first", got, err)
	}
	fb.Memory.Put(ctx, "delivery", "smtp-password", []byte("second"))
	if got, err := r.Get(ctx, "delivery", "smtp-password"); err != nil || string(got) != "second" {
		t.Fatalf("Get after another program changed it = %q, %v; want second", got, err)
	}
	// The backend stops answering: the last value read is served.
	fb.down.Store(true)
	if got, err := r.Get(ctx, "delivery", "smtp-password"); err != nil || string(got) != "second" {
		t.Fatalf("Get with the backend down = %q, %v; want the last value read", got, err)
	}
	if r.Available() {
		t.Fatal("Available() after a read the backend did not answer")
	}
	fb.down.Store(false)
	testenv.WaitFor(t, "recovery", 5*time.Second, func() bool { return r.recover(ctx) })
	fb.Memory.Delete(ctx, "delivery", "smtp-password")
	if _, err := r.Get(ctx, "delivery", "smtp-password"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after another program deleted it = %v", err)
	}
	// The agent's own kinds are still served from the mirror alone.
	fb.Memory.Put(ctx, KindToken, "jti", []byte("x"))
	if _, err := r.Get(ctx, KindToken, "jti"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an agent kind read the backend: %v", err)
	}
}

// A released kind is held by the caller: the store keeps no copy of its
// items, only the changes the backend has not taken yet.
func TestResilientReleasedKindIsNotMirrored(t *testing.T) {
	ctx := context.Background()
	fb := &flaky{Memory: NewMemory()}
	fb.Memory.Put(ctx, KindToken, "old", []byte("t"))
	r, err := newResilient(ctx, fb, Options{Timeout: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Release(KindToken)
	if names, _ := r.mirror.List(ctx, KindToken); len(names) != 0 {
		t.Fatalf("mirror still holds %v", names)
	}
	if got, err := r.Get(ctx, KindToken, "old"); err != nil || string(got) != "t" {
		t.Fatalf("Get of a released item = %q, %v", got, err)
	}
	r.Put(ctx, KindToken, "new", []byte("n"))
	if names, _ := r.mirror.List(ctx, KindToken); len(names) != 0 {
		t.Fatalf("a written item stays mirrored: %v", names)
	}
	fb.down.Store(true)
	r.Put(ctx, KindToken, "pending", []byte("p"))
	r.Delete(ctx, KindToken, "old")
	if got, _ := r.Get(ctx, KindToken, "pending"); string(got) != "p" {
		t.Fatal("a change not yet written is not readable")
	}
	fb.down.Store(false)
	testenv.WaitFor(t, "recovery", 3*time.Second, r.Available)
	if got, _ := fb.Memory.Get(ctx, KindToken, "pending"); string(got) != "p" {
		t.Fatal("a change made while down was not written")
	}
	if _, err := fb.Memory.Get(ctx, KindToken, "old"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a delete made while down was not written")
	}
	if names, _ := r.mirror.List(ctx, KindToken); len(names) != 0 {
		t.Fatalf("written changes stay mirrored: %v", names)
	}
	if names, _ := r.List(ctx, KindToken); strings.Join(names, ",") != "new,pending" {
		t.Fatalf("List = %v", names)
	}
}

// full is a backend whose writes fail as a full filesystem's do.
type full struct {
	*Memory
	on atomic.Bool
}

func (f *full) Put(ctx context.Context, k, n string, d []byte) error {
	if f.on.Load() {
		return &fs.PathError{Op: "write", Path: "/state/.keychain-1.tmp", Err: syscall.ENOSPC}
	}
	return f.Memory.Put(ctx, k, n, d)
}

func (f *full) Delete(ctx context.Context, k, n string) error {
	if f.on.Load() {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, &fs.PathError{Op: "write", Path: "/state/.keychain-1.tmp", Err: syscall.ENOSPC})
	}
	return f.Memory.Delete(ctx, k, n)
}

func (f *full) Backend() string { return "full" }

// A backend that answers with a storage failure (a full disk) is not
// "not answering": the write is refused to the caller (ErrNotStored), the
// item stays as it was, for a released kind too, and nothing is kept to
// be written later.
func TestResilientStorageFailureIsRefused(t *testing.T) {
	ctx := context.Background()
	fb := &full{Memory: NewMemory()}
	fb.Memory.Put(ctx, KindCredential, "c", []byte("old"))
	fb.Memory.Put(ctx, KindToken, "t", []byte("tok"))
	core, logs := observer.New(zap.InfoLevel)
	r, err := newResilient(ctx, fb, Options{Logger: zap.New(core), ProbeInterval: 20 * time.Millisecond}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Release(KindToken)
	fb.on.Store(true)

	for _, w := range []struct {
		what string
		do   func() error
	}{
		{"put", func() error { return r.Put(ctx, KindCredential, "c", []byte("new")) }},
		{"put of a new item", func() error { return r.Put(ctx, KindCredential, "d", []byte("new")) }},
		{"delete", func() error { return r.Delete(ctx, KindCredential, "c") }},
		{"put of a released kind", func() error { return r.Put(ctx, KindToken, "u", []byte("tok")) }},
		{"delete of a released kind", func() error { return r.Delete(ctx, KindToken, "t") }},
	} {
		if err := w.do(); !errors.Is(err, ErrNotStored) || !NoSpace(err) {
			t.Fatalf("%s on a full disk: %v, want ErrNotStored (no space)", w.what, err)
		}
	}
	if d, err := r.Get(ctx, KindCredential, "c"); err != nil || string(d) != "old" {
		t.Fatalf("after refused writes: %q, %v; want the old value", d, err)
	}
	if _, err := r.Get(ctx, KindCredential, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused new item: %v, want not found", err)
	}
	if names, _ := r.List(ctx, KindToken); !slices.Equal(names, []string{"t"}) {
		t.Fatalf("tokens after refused writes: %v, want [t]", names)
	}
	if !r.Available() || !strings.Contains(r.Warning(), "cannot store changes") {
		t.Fatalf("available %v, warning %q: want available, and a warning that changes cannot be stored", r.Available(), r.Warning())
	}
	if logs.FilterMessageSnippet("cannot store changes").Len() != 1 {
		t.Fatalf("want one warning in the log, got %v", logs.All())
	}
	fb.on.Store(false)
	time.Sleep(100 * time.Millisecond) // no prober write may come
	if d, _ := fb.Memory.Get(ctx, KindCredential, "c"); string(d) != "old" {
		t.Fatalf("a refused write reached the backend later: %q", d)
	}
	if err := r.Put(ctx, KindCredential, "c", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.Warning(), "cannot store") || logs.FilterMessageSnippet("stores changes again").Len() != 1 {
		t.Fatalf("after a stored write: warning %q, logs %v", r.Warning(), logs.All())
	}
}

// downThenFull is a backend that stops answering, then answers with a
// full disk.
type downThenFull struct {
	full
	down atomic.Bool
}

func (d *downThenFull) Put(ctx context.Context, k, n string, b []byte) error {
	if d.down.Load() {
		return ErrUnavailable
	}
	return d.full.Put(ctx, k, n, b)
}

func (d *downThenFull) Delete(ctx context.Context, k, n string) error {
	if d.down.Load() {
		return ErrUnavailable
	}
	return d.full.Delete(ctx, k, n)
}

func (d *downThenFull) List(ctx context.Context, k string) ([]string, error) {
	if d.down.Load() {
		return nil, ErrUnavailable
	}
	return d.full.List(ctx, k)
}

// A keychain that comes back from an outage with a full disk refuses the
// catching up: from then on a new change is refused (ErrNotStored) as it
// would be were the keychain available, instead of joining the changes
// kept in memory, and the warning says the keychain cannot store.
func TestResilientFullAfterOutageFailsClosed(t *testing.T) {
	ctx := context.Background()
	b := &downThenFull{full: full{Memory: NewMemory()}}
	r, err := newResilient(ctx, b, Options{Timeout: 100 * time.Millisecond, ProbeInterval: 20 * time.Millisecond}.withDefaults(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b.down.Store(true)
	if err := r.Put(ctx, KindToken, "while-down", []byte("v")); err != nil {
		t.Fatalf("a write while down: %v", err)
	}
	b.full.on.Store(true)
	b.down.Store(false)
	testenv.WaitFor(t, "the catching up refused", 3*time.Second, func() bool { return strings.Contains(r.Warning(), "cannot store") })
	err = r.Put(ctx, KindToken, "new", []byte("v"))
	if !errors.Is(err, ErrNotStored) || !NoSpace(err) {
		t.Fatalf("a new write to a keychain that refused the catching up: %v, want ErrNotStored (no space)", err)
	}
	b.full.on.Store(false)
	testenv.WaitFor(t, "recovery", 3*time.Second, r.Available)
	if _, err := b.Memory.Get(ctx, KindToken, "while-down"); err != nil {
		t.Fatalf("the change made while down was not written once space returned: %v", err)
	}
	if w := r.Warning(); w != "" {
		t.Fatalf("warning after recovery: %q", w)
	}
}
