// Package keychain keeps the agent's secrets and state: the token-signing
// key, credentials, live tokens, consumed token IDs, TOTP counters and
// failure counters. One Store interface, several backends: the Secret
// Service on Linux, the macOS Keychain, a 0600 file for headless servers,
// and memory. docs/keychain.md says which is used where.
package keychain

import (
	"context"
	"errors"
	"syscall"
)

// Kinds of item the agent stores. An item is named by (kind, name).
const (
	KindKey        = "key"        // the token-signing key; name "signing"
	KindCredential = "credential" // one per enrolled credential; name = credential ID
	KindToken      = "token"      // live elevated tokens; name = jti
	KindConsumed   = "consumed"   // consumed single-use jtis until expiry; name = jti
	KindLimit      = "limit"      // failure counters and lockouts; name = method
	KindReplay     = "replay"     // one-time values seen (external jti, nonces); name = value hash
)

// ErrNotFound is returned by Get when no item has that kind and name.
var ErrNotFound = errors.New("keychain: item not found")

// ErrUnavailable wraps failures of a backend that is not answering (daemon
// gone, locked, timed out). The agent keeps serving from memory.
var ErrUnavailable = errors.New("keychain unavailable")

// errNoAnswer wraps, besides ErrUnavailable, a call the backend did not
// answer within its deadline: a daemon that is there but slow or frozen
// (a gnome-keyring just started reads and decrypts its files first), as
// against one that refused or is gone.
var errNoAnswer = errors.New("no answer")

// ErrNotStored wraps a write the backend answered with a failure of its
// storage: a full filesystem or quota, a read-only filesystem, an I/O
// error. Unlike a backend that is not answering, waiting does not help
// and nothing is kept in memory in its place: the store returns the error
// with the item as it was, so that the agent can refuse the request
// rather than answer something a restart would undo (docs/keychain.md).
var ErrNotStored = errors.New("keychain: the change was not stored")

// NoSpace reports whether err (an ErrNotStored) says the filesystem or the
// user's quota is full.
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// storageFailure reports whether err is a failure of the backend's own
// storage (ErrNotStored), not of a backend that is not answering.
func storageFailure(err error) bool {
	return NoSpace(err) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO)
}

// Store is a small key-value store for the agent's items. Every call that
// can block takes a context and must return when it is done; backends give
// every call a deadline of their own as well.
type Store interface {
	// Get returns the item's data, or ErrNotFound.
	Get(ctx context.Context, kind, name string) ([]byte, error)
	// Put creates or replaces an item.
	Put(ctx context.Context, kind, name string, data []byte) error
	// Delete removes an item; deleting a missing item is not an error.
	Delete(ctx context.Context, kind, name string) error
	// List returns the names of the items of a kind.
	List(ctx context.Context, kind string) ([]string, error)
	// Backend names the backend: "memory", "secretservice", "macos", "file".
	Backend() string
	// Close releases the backend's resources.
	Close() error
}

// Warner is implemented by stores that carry a warning for status and the
// log (for example the file backend, or auto's fallback to memory).
type Warner interface {
	Warning() string
}

// Kinds lists every kind above. Stores that copy all items (the
// resilient wrapper Open returns, tests) walk these.
var Kinds = []string{KindKey, KindCredential, KindToken, KindConsumed, KindLimit, KindReplay}

// Availability is implemented by every store Open returns: Available
// reports whether the persistent backend answered its last call. While it
// is false the store serves from memory and writes through again when the
// backend is back (docs/keychain.md).
type Availability interface {
	Available() bool
}
