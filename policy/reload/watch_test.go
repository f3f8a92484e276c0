package reload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/stepup-agent/stepup-agent/policy"
)

// change is one onChange call.
type change struct {
	p      *policy.Policy
	exists bool
	err    error
}

// startWatch runs Watch on path and returns its calls. The test ends by
// cancelling it and checking that Watch returned and left no goroutine.
func startWatch(t *testing.T, path string) <-chan change {
	t.Helper()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan change, 16)
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, path, zaptest.NewLogger(t), func(p *policy.Policy, exists bool, err error) {
			ch <- change{p, exists, err}
		})
	}()
	// Watch arms its watches and takes its baseline before it waits;
	// there is no hook to see that, so give it a moment.
	time.Sleep(100 * time.Millisecond)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Watch did not return after cancel")
		}
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
	return ch
}

func next(t *testing.T, ch <-chan change) change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no onChange within 5s")
	}
	return change{}
}

// quiet checks that no onChange comes for a while.
func quiet(t *testing.T, ch <-chan change) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected onChange: exists=%v err=%v", c.exists, c.err)
	case <-time.After(400 * time.Millisecond):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantTTL checks a good change whose scope a has the given ttl.
func wantTTL(t *testing.T, c change, ttl time.Duration) {
	t.Helper()
	if c.err != nil || !c.exists || c.p == nil {
		t.Fatalf("change: exists=%v err=%v", c.exists, c.err)
	}
	if got := c.p.Resolve("a").TTL; got != ttl {
		t.Fatalf("ttl %v, want %v", got, ttl)
	}
}

func TestWatchAtomicRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	write(t, path, "scopes: {a: {ttl: 1m}}\n")
	ch := startWatch(t, path)

	// An editor's save: a temporary file renamed over the policy.
	tmp := filepath.Join(dir, ".policy.yaml.tmp")
	write(t, tmp, "scopes: {a: {ttl: 2m}}\n")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	wantTTL(t, next(t, ch), 2*time.Minute)

	// `mv new policy.yaml` from elsewhere in the directory.
	write(t, filepath.Join(dir, "new"), "scopes: {a: {ttl: 3m}}\n")
	if err := os.Rename(filepath.Join(dir, "new"), path); err != nil {
		t.Fatal(err)
	}
	wantTTL(t, next(t, ch), 3*time.Minute)
	quiet(t, ch)
}

func TestWatchInPlaceWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	write(t, path, "scopes: {a: {ttl: 1m}}\n")
	ch := startWatch(t, path)

	// Truncate and write in two steps, as `>` in a shell does.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("scopes: {a: ")
	time.Sleep(20 * time.Millisecond)
	f.WriteString("{ttl: 4m}}\n")
	f.Close()
	wantTTL(t, next(t, ch), 4*time.Minute)

	// Unrelated files and rewriting the same bytes cause no call.
	write(t, filepath.Join(dir, "other"), "x")
	write(t, path, "scopes: {a: {ttl: 4m}}\n")
	quiet(t, ch)
}

func TestWatchBrokenThenFixed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	write(t, path, "scopes: {a: {ttl: 1m}}\n")
	ch := startWatch(t, path)

	write(t, path, "scopes:\n  a:\n    ttl: 2x\n")
	c := next(t, ch)
	if c.err == nil || c.p != nil || !c.exists {
		t.Fatalf("broken file: %+v", c)
	}
	if want := path + `: line 3: scopes.a.ttl: "2x" is not a duration (use 90s, 2m, 1h)`; c.err.Error() != want {
		t.Errorf("error %q, want %q", c.err, want)
	}
	write(t, path, "scopes: {a: {ttl: 5m}}\n")
	wantTTL(t, next(t, ch), 5*time.Minute)
}

func TestWatchDeleteAndRecreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	write(t, path, "scopes: {a: {ttl: 1m}}\n")
	ch := startWatch(t, path)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	c := next(t, ch)
	if c.err != nil || c.exists || c.p == nil || c.p.Resolve("wallet:export").TTL != 5*time.Minute {
		t.Fatalf("removed: %+v", c)
	}
	write(t, path, "scopes: {a: {ttl: 6m}}\n")
	wantTTL(t, next(t, ch), 6*time.Minute)
}

// TestWatchMissingDirectory: the directory (two levels of it) appears
// after Watch starts, disappears, and comes back.
func TestWatchMissingDirectory(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "config", "stepup")
	path := filepath.Join(dir, "policy.yaml")
	ch := startWatch(t, path)

	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, path, "scopes: {a: {ttl: 7m}}\n")
	wantTTL(t, next(t, ch), 7*time.Minute)

	if err := os.RemoveAll(filepath.Join(root, "config")); err != nil {
		t.Fatal(err)
	}
	if c := next(t, ch); c.exists || c.err != nil {
		t.Fatalf("removed dir: %+v", c)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, path, "scopes: {a: {ttl: 8m}}\n")
	wantTTL(t, next(t, ch), 8*time.Minute)
}

// TestWatchSymlinkSwap: the Kubernetes ConfigMap layout, where
// policy.yaml -> ..data/policy.yaml and ..data -> ..<timestamp> is
// replaced by renaming a new symlink over it.
func TestWatchSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	mk := func(gen, content string) {
		if err := os.Mkdir(filepath.Join(dir, gen), 0o700); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, gen, "policy.yaml"), content)
	}
	mk("..2024_01", "scopes: {a: {ttl: 1m}}\n")
	if err := os.Symlink("..2024_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink("..data/policy.yaml", path); err != nil {
		t.Fatal(err)
	}
	ch := startWatch(t, path)

	mk("..2024_02", "scopes: {a: {ttl: 9m}}\n")
	if err := os.Symlink("..2024_02", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..2024_01"))
	wantTTL(t, next(t, ch), 9*time.Minute)
}

// TestWatchSymlinkTarget: policy.yaml is a symlink into another directory
// (dotfiles); editing the target is seen.
func TestWatchSymlinkTarget(t *testing.T) {
	dir, dots := t.TempDir(), t.TempDir()
	target := filepath.Join(dots, "policy.yaml")
	write(t, target, "scopes: {a: {ttl: 1m}}\n")
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	ch := startWatch(t, path)
	tmp := filepath.Join(dots, "tmp")
	write(t, tmp, "scopes: {a: {ttl: 11m}}\n")
	if err := os.Rename(tmp, target); err != nil {
		t.Fatal(err)
	}
	wantTTL(t, next(t, ch), 11*time.Minute)
}

func TestWatchCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Watch(ctx, filepath.Join(t.TempDir(), "p.yaml"), nil, func(*policy.Policy, bool, error) { t.Error("called") }); err != nil {
		t.Fatal(err)
	}
}

func TestWatchEmptyFileKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	write(t, path, "unknownScopes: deny\nscopes: {a: {ttl: 1m}}\n")
	ch := startWatch(t, path)
	write(t, path, "")
	c := next(t, ch)
	if !errors.Is(c.err, policy.ErrEmptyReload) || c.p != nil {
		t.Fatalf("empty file: policy.policy %v, err %v; want policy.ErrEmptyReload", c.p, c.err)
	}
	if _, _, err := policy.Reload(path); !errors.Is(err, policy.ErrEmptyReload) {
		t.Fatalf("Reload of an empty file: %v", err)
	}
	write(t, path, "scopes: {a: {ttl: 3m}}\n")
	wantTTL(t, next(t, ch), 3*time.Minute)
	if p, _, err := policy.Reload(path); err != nil || p.Resolve("a").TTL != 3*time.Minute {
		t.Fatalf("Reload: %v %v", p, err)
	}
}
