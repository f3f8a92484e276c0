package keychain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
// implements Availability and Warner. "auto" picks the best backend
// available on this machine (docs/keychain.md).
//
// A backend named explicitly that does not answer when Open loads its items
// is an error (wrapping ErrUnavailable); auto falls back to memory with a
// warning instead.
func Open(ctx context.Context, backend string, opts Options) (Store, error) {
	opts = opts.withDefaults()
	switch backend {
	case "memory":
		return newResilient(ctx, NewMemory(), opts, "")
	case "auto", "":
		return openAuto(ctx, opts)
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
		return memoryFallback(ctx, opts, "no persistent keychain backend for this system; "+
			"use --keychain file to keep them in a 0600 file")
	}
)

// memoryFallback is auto's last resort: memory, with a warning that says
// why and how to get persistence.
func memoryFallback(ctx context.Context, opts Options, why string) (Store, error) {
	w := "keychain: tokens, credentials and the signing key live in memory only and are lost on restart: " + why
	opts.Logger.Warn(w)
	return newResilient(ctx, NewMemory(), opts, w)
}
