package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// fullStore is a memory keychain whose writes fail as a full disk's do
// while full is set (what the store Open returns gives for the file
// backend on a full filesystem: ErrNotStored).
type fullStore struct {
	*keychain.Memory
	full atomic.Bool
}

func (f *fullStore) refuse() error {
	if f.full.Load() {
		return fmt.Errorf("%w: keychain file: write: %w", keychain.ErrNotStored, syscall.ENOSPC)
	}
	return nil
}

func (f *fullStore) Put(ctx context.Context, k, n string, d []byte) error {
	if err := f.refuse(); err != nil {
		return err
	}
	return f.Memory.Put(ctx, k, n, d)
}

func (f *fullStore) Delete(ctx context.Context, k, n string) error {
	if err := f.refuse(); err != nil {
		return err
	}
	return f.Memory.Delete(ctx, k, n)
}

func fullPersister(t *testing.T) (*persister, *fullStore) {
	t.Helper()
	st := &fullStore{Memory: keychain.NewMemory()}
	p := newPersister(st, zap.NewNop())
	go p.run()
	t.Cleanup(p.close)
	return p, st
}

// On a full disk each operation fails its own way: a grant (a minted
// token, an enrolled credential) is undone and the request refused; a
// consumption stays in force in memory, is refused too, and is stored by
// a retry once space returns.
func TestPersisterFullDisk(t *testing.T) {
	now := time.Now()
	p, st := fullPersister(t)
	s := newTokenStore(p)
	creds := newCredSet(p)
	ctx := context.Background()
	barrier := func(from uint64) error { return p.barrier(from, 5*time.Second) }

	live := &held{JTI: "live", Scopes: []string{"a"}, ExpiresAt: now.Add(time.Hour), SingleUse: true}
	from := p.mark()
	s.add(live)
	if err := barrier(from); err != nil {
		t.Fatalf("a mint with space: %v", err)
	}

	st.full.Store(true)
	from = p.mark()
	minted := &held{JTI: "minted", Scopes: []string{"a"}, ExpiresAt: now.Add(time.Hour)}
	s.add(minted)
	err := barrier(from)
	if !errors.Is(err, keychain.ErrNotStored) || !keychain.NoSpace(err) {
		t.Fatalf("a mint on a full disk: barrier %v, want ErrNotStored (no space)", err)
	}
	if s.get("minted") != nil || s.best("a", now, anyCaller) == minted {
		t.Fatal("a token whose write was refused is still held")
	}

	from = p.mark()
	creds.add(&method.Credential{ID: "c1", Method: "totp"})
	if err := barrier(from); err == nil {
		t.Fatal("an enrollment on a full disk: no error")
	}
	if _, ok := creds.get("c1"); ok {
		t.Fatal("a credential whose write was refused is still enrolled")
	}

	from = p.mark()
	if !s.consume(live) {
		t.Fatal("consume")
	}
	if err := barrier(from); err == nil {
		t.Fatal("a consume on a full disk: no error")
	}
	if s.get("live") != nil || !s.wasConsumed("live") {
		t.Fatal("a consume that could not be stored was undone in memory: the token is usable again")
	}
	if p.pending() != 2 { // the token's delete and the consumed id
		t.Fatalf("writes waiting for a retry: %d, want 2", p.pending())
	}
	// A request that changed nothing since its mark is not refused for
	// another one's failure.
	if err := barrier(p.mark()); err != nil {
		t.Fatalf("an empty barrier: %v", err)
	}

	st.full.Store(false)
	testenv.WaitFor(t, "the retried consume stored", 5*time.Second, func() bool {
		_, tokErr := st.Memory.Get(ctx, keychain.KindToken, "live")
		_, conErr := st.Memory.Get(ctx, keychain.KindConsumed, "live")
		return errors.Is(tokErr, keychain.ErrNotFound) && conErr == nil && p.pending() == 0
	})
	if names, _ := st.Memory.List(ctx, keychain.KindToken); slices.Contains(names, "minted") {
		t.Fatal("the refused token was written after all")
	}
	if names, _ := st.Memory.List(ctx, keychain.KindCredential); len(names) != 0 {
		t.Fatalf("the refused credential was written after all: %v", names)
	}
}

// A retry never overwrites a newer write of the same item.
func TestPersisterRetryKeepsNewest(t *testing.T) {
	p, st := fullPersister(t)
	ctx := context.Background()
	st.full.Store(true)
	p.put(keychain.KindLimit, "totp", 1)
	p.flush()
	if p.pending() != 1 {
		t.Fatalf("pending %d, want 1", p.pending())
	}
	st.full.Store(false)
	p.put(keychain.KindLimit, "totp", 2)
	p.flush()
	time.Sleep(2 * retryInterval)
	d, err := st.Memory.Get(ctx, keychain.KindLimit, "totp")
	if err != nil || string(d) != "2" || p.pending() != 0 {
		t.Fatalf("stored %q, %v, pending %d; want 2 and nothing pending", d, err, p.pending())
	}
}

// The refusal says what the system said, names no temporary file, and
// says what to do.
func TestNotStoredError(t *testing.T) {
	err := fmt.Errorf("%w: %w", keychain.ErrNotStored,
		fmt.Errorf("%w: keychain file: %w", keychain.ErrUnavailable, &os.PathError{Op: "write", Path: "/s/.keychain-123.tmp", Err: syscall.ENOSPC}))
	e := notStoredError(api.MethodRequestExternalAuth, err)
	if e.Code != api.CodeKeychainFailed || e.Data.Reason != "keychain_failed" ||
		e.Message != "the keychain could not store this request's change (no space left on device): no token was issued" ||
		!strings.Contains(e.Data.Hint, "free disk space") {
		t.Fatalf("got %d %q %+v", e.Code, e.Message, e.Data)
	}
}

// slowStore is a memory keychain whose writes wait until released.
type slowStore struct {
	*keychain.Memory
	release chan struct{}
}

func (s *slowStore) Put(ctx context.Context, k, n string, d []byte) error {
	<-s.release
	return s.Memory.Put(ctx, k, n, d)
}

// status says the keychain is available only once every change the agent
// answered as done is stored: a kill -9 while an answered write is queued
// or under way would lose it, so status must not invite one (the chaos
// tool, and a person, take "available" as "all of it is there"). Writes
// of requests not answered yet do not count: under a steady load some
// write is always under way.
func TestStatusAvailableOnlyWhenAnsweredIsStored(t *testing.T) {
	st := &slowStore{Memory: keychain.NewMemory(), release: make(chan struct{})}
	p := newPersister(st, zap.NewNop())
	go p.run()
	t.Cleanup(p.close)
	stored := func() bool { return true }
	p.put(keychain.KindLimit, "a", 1)
	if p.owes(stored) {
		t.Fatal("a write no answer waited for counts as owed")
	}
	p.owe(p.mark()) // answered before the write was stored
	if !p.owes(stored) {
		t.Fatal("an answered write under way is not owed")
	}
	if ks := keychainStatus(st, true); ks.Available || !strings.Contains(ks.Warning, "not all written to the keychain yet") {
		t.Fatalf("status with an answered write not stored: %+v", ks)
	}
	close(st.release)
	p.flush()
	if !p.owes(func() bool { return false }) {
		t.Fatal("owed settled while the keychain does not hold what was tried")
	}
	if p.owes(stored) {
		t.Fatal("still owed once written and stored")
	}
	if ks := keychainStatus(st, false); !ks.Available || ks.Warning != "" {
		t.Fatalf("status once written: %+v", ks)
	}
}

// gateStore is a memory keychain whose writes wait for an answer on
// answer: nil stores, an error refuses.
type gateStore struct {
	*keychain.Memory
	answer chan error
}

func (g *gateStore) Put(ctx context.Context, k, n string, d []byte) error {
	if err := <-g.answer; err != nil {
		return err
	}
	return g.Memory.Put(ctx, k, n, d)
}

// gatePersister is a persister on a gateStore, running until the test
// ends.
func gatePersister(t *testing.T) (*persister, *gateStore) {
	st := &gateStore{Memory: keychain.NewMemory(), answer: make(chan error)}
	p := newPersister(st, zap.NewNop())
	go p.run()
	t.Cleanup(func() { close(st.answer); p.close() })
	return p, st
}

// The attacker's view of a mint the keychain is slow to store, and then
// refuses: while its write is under way no request is handed the token
// or may verify it (a getToken racing the mint would otherwise get a
// token the refusal then takes back), and after the refusal it is gone.
// Once a mint is stored, it is handed out.
func TestMintNotHandedOutBeforeStored(t *testing.T) {
	now := time.Now()
	p, st := gatePersister(t)
	s := newTokenStore(p)
	seen := func(jti string) bool {
		h, _ := s.bestFor("a", now, want{})
		return s.get(jti) != nil || s.best("a", now, anyCaller) != nil || h != nil || len(s.status(now, anyCaller)) != 0
	}
	from := p.mark()
	s.add(&held{JTI: "refused", Scopes: []string{"a"}, ExpiresAt: now.Add(time.Hour)})
	time.Sleep(20 * time.Millisecond) // the write is under way
	if seen("refused") {
		t.Fatal("a token whose write is under way is handed out")
	}
	st.answer <- fmt.Errorf("%w: %w", keychain.ErrNotStored, syscall.ENOSPC)
	if err := p.barrier(from, 5*time.Second); err == nil {
		t.Fatal("the refused mint's barrier: no error")
	}
	if seen("refused") {
		t.Fatal("a refused token is handed out")
	}

	from = p.mark()
	s.add(&held{JTI: "stored", Scopes: []string{"a"}, ExpiresAt: now.Add(time.Hour)})
	st.answer <- nil
	if err := p.barrier(from, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !seen("stored") || s.get("stored") == nil {
		t.Fatal("a stored token is not handed out once its mint answered")
	}
}

// An answered change the keychain then refused (a full disk) stays in
// force in memory and waits for a retry: it is owed until the retry
// stores it, even though the keychain answers.
func TestOwedUntilARefusedWriteIsRetried(t *testing.T) {
	p, st := fullPersister(t)
	stored := func() bool { return true }
	st.full.Store(true)
	from := p.mark()
	p.put(keychain.KindConsumed, "jti", 1)
	p.owe(p.mark())
	p.barrier(from, 5*time.Second)
	if !p.owes(stored) {
		t.Fatal("a refused, answered write waiting for its retry is not owed")
	}
	st.full.Store(false)
	testenv.WaitFor(t, "the retry stored", 5*time.Second, func() bool { return p.pending() == 0 })
	if p.owes(stored) {
		t.Fatal("still owed once the retry stored it")
	}
}

// A mint whose write is not stored by its answer's deadline is
// abandoned: never handed out, and deleted again if the write lands
// after all; one already stored is not abandoned.
func TestAbandonedMint(t *testing.T) {
	now := time.Now()
	p, st := gatePersister(t)
	s := newTokenStore(p)
	g := &grants{}
	h := &held{JTI: "late", Scopes: []string{"a"}, ExpiresAt: now.Add(time.Hour)}
	s.add(h)
	g.add(h)
	time.Sleep(20 * time.Millisecond) // its write is under way
	if !g.abandonUnstored(s) {
		t.Fatal("a mint not stored yet was not abandoned")
	}
	st.answer <- nil // the write lands after all
	testenv.WaitFor(t, "the late write deleted again", 5*time.Second, func() bool {
		_, err := st.Memory.Get(context.Background(), keychain.KindToken, "late")
		return errors.Is(err, keychain.ErrNotFound) && p.mark() > 1
	})
	if s.get("late") != nil || s.best("a", now, anyCaller) != nil || s.count() != 0 {
		t.Fatal("an abandoned mint is held or handed out")
	}

	g = &grants{}
	h = &held{JTI: "ok", Scopes: []string{"a"}, ExpiresAt: now.Add(time.Hour)}
	from := p.mark()
	s.add(h)
	g.add(h)
	st.answer <- nil
	p.barrier(from, 5*time.Second)
	if g.abandonUnstored(s) || s.get("ok") == nil {
		t.Fatal("a stored mint was abandoned")
	}
}
