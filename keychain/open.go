package keychain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Options configure Open.
type Options struct {
	// StateDir is where the file backend keeps its file
	// ($XDG_STATE_HOME/stepup, else ~/.local/state/stepup).
	StateDir string
	Logger   *zap.Logger
	// Timeout bounds every call to a persistent backend (2s by default).
	// A backend that does not answer in time is marked unavailable.
	Timeout time.Duration
	// ProbeInterval is how often an unavailable backend is tried again
	// (10s by default); a write also tries it, at most this often.
	ProbeInterval time.Duration
	// AutoTimeout bounds auto's check that the Secret Service answers
	// (1s by default).
	AutoTimeout time.Duration
	// LoadTimeout bounds the load at open of a backend that is there but
	// does not answer in Timeout (5×Timeout by default): a keychain
	// daemon just started may take longer over its first calls.
	LoadTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 10 * time.Second
	}
	if o.AutoTimeout <= 0 {
		o.AutoTimeout = time.Second
	}
	if o.LoadTimeout <= 0 {
		o.LoadTimeout = 5 * o.Timeout
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	return o
}

// DefaultStateDir is $XDG_STATE_HOME/stepup, or ~/.local/state/stepup.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "stepup")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "stepup")
	}
	return ""
}

// Backends lists the names accepted by Open.
var Backends = []string{"auto", "secretservice", "macos", "file", "memory"}

// Open returns the named backend behind a resilient store: reads are served
// from memory, writes go through to the backend, and when the backend stops
// answering the store goes on in memory, logs once, reports Available() ==
// false and writes through again when the backend is back. The store
// implements Availability and Warner.
//
// "auto" picks the macOS Keychain on macOS, the Secret Service when the
// session bus offers one, else the file backend; never memory. Its first
// choice is remembered in StateDir/keychain (RememberName) and used by
// every later auto start, so a desktop start and an SSH start share one
// store; a backend named explicitly overrides it (docs/keychain.md).
//
// A backend named explicitly (or remembered) that does not answer when
// Open loads its items is an error (wrapping ErrUnavailable).
func Open(ctx context.Context, backend string, opts Options) (Store, error) {
	opts = opts.withDefaults()
	switch backend {
	case "memory":
		return newResilient(ctx, NewMemory(), opts, "")
	case "auto", "":
		return openRemembered(ctx, opts)
	case "secretservice", "macos", "file":
		st, err := openBackend(ctx, backend, opts)
		if err != nil {
			return nil, err
		}
		r, err := newResilient(ctx, st, opts, "")
		if err != nil {
			st.Close()
			return nil, err
		}
		return r, nil
	}
	return nil, fmt.Errorf("unknown keychain backend %q: use one of auto, secretservice, macos, file, memory", backend)
}

// RememberName is the file in the state directory that keeps auto's
// first choice: one backend name and a newline.
const RememberName = "keychain"

// openRemembered is auto: the remembered backend when there is one,
// else the platform's pick, which is then remembered.
func openRemembered(ctx context.Context, opts Options) (Store, error) {
	path := filepath.Join(opts.StateDir, RememberName)
	if name, err := readRemembered(path); err != nil {
		return nil, err
	} else if name != "" {
		st, err := Open(ctx, name, opts)
		if err != nil {
			return nil, fmt.Errorf("%w (--keychain auto uses %s: chosen at the first start and remembered in %s, "+
				"so that every start shares one store; make it answer, or start with --keychain NAME to use another store)", err, name, path)
		}
		return st, nil
	}
	st, err := openAuto(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := remember(path, st.Backend()); err != nil {
		opts.Logger.Warn("keychain auto: cannot remember the choice; the next start chooses again", zap.String("path", path), zap.Error(err))
	}
	return st, nil
}

// readRemembered returns the remembered backend, "" when none is.
func readRemembered(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("keychain auto: %w", err)
	}
	name := strings.TrimSpace(string(data))
	switch name {
	case "secretservice", "macos", "file":
		return name, nil
	}
	return "", fmt.Errorf("keychain auto: %s names %q, not secretservice, macos or file: fix or remove it, or start with --keychain NAME", path, name)
}

// remember writes the choice (0600, atomically).
func remember(path, backend string) error {
	if backend == "memory" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".keychain-choice-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(backend + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// OpenBackend opens the named persistent backend by itself, without the
// resilient store Open puts in front of it (for tests and benchmarks).
func OpenBackend(ctx context.Context, backend string, opts Options) (Store, error) {
	return openBackend(ctx, backend, opts.withDefaults())
}

func openBackend(ctx context.Context, backend string, opts Options) (Store, error) {
	switch backend {
	case "file":
		return OpenFile(opts.StateDir)
	case "secretservice":
		return openSecretService(ctx, opts)
	case "macos":
		return openMacOS(ctx, opts)
	case "memory":
		return NewMemory(), nil
	}
	return nil, fmt.Errorf("unknown keychain backend %q", backend)
}

// Platform hooks, set from init in the _linux.go and _darwin.go files.
var (
	openSecretService = func(ctx context.Context, opts Options) (Store, error) {
		return nil, fmt.Errorf("keychain backend secretservice is only available on Linux: use --keychain file or memory")
	}
	openMacOS = func(ctx context.Context, opts Options) (Store, error) {
		return nil, fmt.Errorf("keychain backend macos is only available on macOS: use --keychain file or memory")
	}
	openAuto = func(ctx context.Context, opts Options) (Store, error) {
		return autoFallback(ctx, opts, "no system keychain on this platform")
	}
)

// autoFallback is auto's last resort: the file backend, never memory,
// with a warning that says why and what the file is.
func autoFallback(ctx context.Context, opts Options, why string) (Store, error) {
	st, err := OpenFile(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("keychain auto: %s, and the file backend cannot be used either: %w", why, err)
	}
	opts.Logger.Warn("keychain auto: using the file backend: "+why, zap.String("file", st.Path()))
	r, err := newResilient(ctx, st, opts, "")
	if err != nil {
		st.Close()
		return nil, err
	}
	return r, nil
}
