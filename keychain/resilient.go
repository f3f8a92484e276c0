package keychain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// pinger is implemented by backends with a cheap liveness check (the
// Secret Service: session open, default collection present and unlocked).
type pinger interface {
	Ping(ctx context.Context) error
}

type itemKey struct{ kind, name string }

// resilient is the store Open returns. Every item is mirrored in memory:
// reads never touch the backend once a kind is loaded, so a slow or frozen
// keychain cannot hold up a request that only reads (isStepUpRequired).
// Writes change the mirror and then go through to the backend, which
// bounds each call with its own deadline. When the backend does not
// answer a write the store marks it unavailable, logs once, and keeps the
// change in a dirty set; a prober tries the backend again every
// ProbeInterval (and soon after a write) and, once it answers, writes the
// dirty set (puts and deletes) before it reports the backend available
// again. When the backend answers that its storage cannot take the write
// (a full disk: storageFailure), the item is left as it was and the
// write fails with ErrNotStored: the caller decides (docs/keychain.md,
// "Crash safety").
type resilient struct {
	backend    Store
	persistent bool
	log        *zap.Logger
	opts       Options
	fallback   string // auto's warning when it fell back to memory

	mirror *Memory

	loadMu sync.Mutex // held while loading; before wmu, never after it
	loaded map[string]bool
	// relMu guards released, the kinds the caller holds itself
	// (Release); write and flushOne read it holding wmu.
	relMu    sync.Mutex
	released map[string]bool

	// wmu serialises writes to the backend and the flush of the dirty set,
	// so the backend sees changes in the order the mirror did.
	wmu   chan struct{}
	dirty map[itemKey]struct{} // guarded by wmu

	available atomic.Bool
	// recovering is set while the backend answers again and the dirty
	// set is being written; flushed is closed, and replaced, when such
	// a flush ends (guarded by downMu). WaitFlushed waits on it.
	recovering atomic.Bool
	flushed    chan struct{}
	downMu     sync.Mutex
	downSince  time.Time
	downErr    string
	// The last write the backend refused (ErrNotStored), until one
	// succeeds: guarded by downMu.
	refusedSince time.Time
	refusedErr   string
	refusedCause error

	lastProbe atomic.Int64 // unix nanoseconds
	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// newResilient loads every kind from the backend and starts the prober. It
// fails when the backend does not answer the load.
func newResilient(ctx context.Context, backend Store, opts Options, fallback string) (*resilient, error) {
	r := &resilient{
		backend:  backend,
		log:      opts.Logger,
		opts:     opts,
		fallback: fallback,
		loaded:   map[string]bool{},
		released: map[string]bool{},
		wmu:      make(chan struct{}, 1),
		dirty:    map[itemKey]struct{}{},
		kick:     make(chan struct{}, 1),
		flushed:  make(chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.available.Store(true)
	if m, ok := backend.(*Memory); ok {
		// Nothing to mirror: memory is the backend.
		r.mirror = m
		close(r.done)
		return r, nil
	}
	r.persistent = true
	r.mirror = NewMemory()
	if err := r.loadAtOpen(ctx); err != nil {
		return nil, fmt.Errorf("keychain %s: cannot load its items: %w", backend.Backend(), err)
	}
	go r.prober()
	return r, nil
}

// loadAtOpen loads every kind. A call the backend did not answer in its
// deadline is tried again until LoadTimeout: a gnome-keyring started a
// moment ago answers its first calls slowly, and the agent must not
// refuse to start for that. A backend that refuses, or does not answer
// by then, is an error: the agent does not start on a keychain it
// cannot read (it would mint over state it has not seen).
func (r *resilient) loadAtOpen(ctx context.Context) error {
	deadline := time.Now().Add(r.opts.LoadTimeout)
	for _, kind := range Kinds {
		for {
			err := r.loadKind(ctx, kind)
			if err == nil {
				break
			}
			if !errors.Is(err, errNoAnswer) || time.Now().Add(r.opts.Timeout).After(deadline) {
				return err
			}
			r.log.Warn("keychain slow to answer at start; trying again",
				zap.String("backend", r.backend.Backend()), zap.String("kind", kind), zap.Error(err))
			select {
			case <-ctx.Done():
				return err
			// Half a deadline between tries: the call that timed out
			// is still queued in the daemon, and tries in quick
			// succession would only queue more work behind it.
			case <-time.After(r.opts.Timeout / 2):
			}
		}
	}
	return nil
}

// loadKind copies a kind's items from the backend into the mirror, except
// names the mirror already has or that changed while the backend was down.
func (r *resilient) loadKind(ctx context.Context, kind string) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if r.loaded[kind] {
		return nil
	}
	items, err := loadAll(ctx, r.backend, kind)
	if err != nil {
		return err
	}
	if !r.lockWrites(ctx) {
		return ctx.Err()
	}
	defer r.unlockWrites()
	for n, d := range items {
		if _, isDirty := r.dirty[itemKey{kind, n}]; isDirty {
			continue
		}
		if _, err := r.mirror.Get(ctx, kind, n); err == nil {
			continue
		}
		r.mirror.Put(ctx, kind, n, d)
	}
	r.loaded[kind] = true
	return nil
}

// bulkGetter is implemented by backends that read a whole kind at once
// (the Secret Service: three round trips instead of three an item).
type bulkGetter interface {
	GetAll(ctx context.Context, kind string) (map[string][]byte, error)
}

// loadAll reads every item of kind from b.
func loadAll(ctx context.Context, b Store, kind string) (map[string][]byte, error) {
	if bg, ok := b.(bulkGetter); ok {
		return bg.GetAll(ctx, kind)
	}
	names, err := b.List(ctx, kind)
	if err != nil {
		return nil, err
	}
	items := make(map[string][]byte, len(names))
	for _, n := range names {
		d, err := b.Get(ctx, kind, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted between List and Get
		}
		if err != nil {
			return nil, err
		}
		items[n] = d
	}
	return items, nil
}

// ensureLoaded loads a kind not in Kinds on first use, while the backend
// answers.
func (r *resilient) ensureLoaded(ctx context.Context, kind string) {
	if !r.persistent {
		return
	}
	r.loadMu.Lock()
	done := r.loaded[kind]
	r.loadMu.Unlock()
	if done || !r.available.Load() {
		return
	}
	if err := r.loadKind(ctx, kind); err != nil {
		r.markDown(err)
	}
}

func (r *resilient) Get(ctx context.Context, kind, name string) ([]byte, error) {
	if r.isReleased(kind) {
		// A change not yet written is in the mirror; else the backend.
		if d, err := r.mirror.Get(ctx, kind, name); err == nil || !r.available.Load() {
			return d, err
		}
		bctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		defer cancel()
		return r.backend.Get(bctx, kind, name)
	}
	if r.persistent && !slices.Contains(Kinds, kind) {
		if d, ok, err := r.readThrough(ctx, kind, name); ok {
			return d, err
		}
	}
	r.ensureLoaded(ctx, kind)
	return r.mirror.Get(ctx, kind, name)
}

// readThrough reads an item of a kind outside Kinds from the backend. Such
// kinds are set by other programs while the agent runs (the delivery
// secrets, stored with secret-tool), so the mirror alone would keep
// serving the value of the first read. The mirror is kept in step, for
// when the backend stops answering. ok is false when the mirror must
// answer instead: the backend is down or did not answer, or the agent
// changed the item while it was down and has not written it yet.
func (r *resilient) readThrough(ctx context.Context, kind, name string) (data []byte, ok bool, err error) {
	if !r.available.Load() || !r.lockWrites(ctx) {
		return nil, false, nil
	}
	defer r.unlockWrites()
	if _, dirty := r.dirty[itemKey{kind, name}]; dirty {
		return nil, false, nil
	}
	bctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	d, err := r.backend.Get(bctx, kind, name)
	switch {
	case err == nil:
		r.mirror.Put(ctx, kind, name, d)
		return d, true, nil
	case errors.Is(err, ErrNotFound):
		r.mirror.Delete(ctx, kind, name)
		return nil, true, ErrNotFound
	}
	if ctx.Err() == nil {
		r.markDown(err)
	}
	return nil, false, nil
}

func (r *resilient) List(ctx context.Context, kind string) ([]string, error) {
	if r.isReleased(kind) && r.available.Load() {
		bctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		defer cancel()
		names, err := r.backend.List(bctx, kind)
		if err == nil {
			pending, _ := r.mirror.List(ctx, kind)
			names = append(names, pending...)
			slices.Sort(names)
			return slices.Compact(names), nil
		}
	}
	r.ensureLoaded(ctx, kind)
	return r.mirror.List(ctx, kind)
}

// Releaser is implemented by the stores Open returns: after Release(kind)
// the store keeps in memory none of kind's items, only the changes the
// backend has not taken yet. The agent releases the kinds it holds itself
// once it has read them at start (its tokens), so that the resilient
// layer does not keep a second copy of each.
type Releaser interface {
	Release(kind string)
}

// Release stops mirroring kind (see Releaser).
func (r *resilient) Release(kind string) {
	if !r.persistent {
		return // memory is the backend: the one copy
	}
	r.relMu.Lock()
	r.released[kind] = true
	r.relMu.Unlock()
	if !r.lockWrites(context.Background()) {
		return
	}
	defer r.unlockWrites()
	names, _ := r.mirror.List(context.Background(), kind)
	for _, n := range names {
		if _, dirty := r.dirty[itemKey{kind, n}]; !dirty {
			r.mirror.Delete(context.Background(), kind, n)
		}
	}
}

func (r *resilient) isReleased(kind string) bool {
	if !r.persistent {
		return false
	}
	r.relMu.Lock()
	defer r.relMu.Unlock()
	return r.released[kind]
}

func (r *resilient) Put(ctx context.Context, kind, name string, data []byte) error {
	return r.write(ctx, kind, name, data, true)
}

func (r *resilient) Delete(ctx context.Context, kind, name string) error {
	return r.write(ctx, kind, name, nil, false)
}

func (r *resilient) write(ctx context.Context, kind, name string, data []byte, put bool) error {
	if !r.persistent {
		if put {
			return r.mirror.Put(ctx, kind, name, data)
		}
		return r.mirror.Delete(ctx, kind, name)
	}
	if !r.lockWrites(ctx) {
		return fmt.Errorf("keychain: waiting for an earlier write: %w", ctx.Err())
	}
	defer r.unlockWrites()
	released := r.isReleased(kind)
	k := itemKey{kind, name}
	// What the mirror held, to put back when the backend refuses the
	// write for good (ErrNotStored).
	oldData, oldErr := r.mirror.Get(ctx, kind, name)
	// mirror keeps the change for the dirty set to write later, and
	// for reads while it is not written.
	mirror := func() {
		if put {
			r.mirror.Put(ctx, kind, name, data)
		} else {
			r.mirror.Delete(ctx, kind, name)
		}
	}
	if !released {
		mirror()
	}
	// restore puts the mirror back as it was, for a write refused.
	restore := func() {
		if released {
			return
		}
		if oldErr == nil {
			r.mirror.Put(ctx, kind, name, oldData)
		} else {
			r.mirror.Delete(ctx, kind, name)
		}
	}
	if !r.available.Load() {
		if err := r.refusal(); err != nil {
			// The backend answers but its storage refused the
			// catching up (a full disk after an outage): a new
			// change fails closed as it would were it available.
			restore()
			return fmt.Errorf("%w: %w", ErrNotStored, err)
		}
		if released {
			mirror()
		}
		r.dirty[k] = struct{}{}
		r.kickProbe()
		return nil
	}
	// The backend bounds the call itself; the caller's cancellation must
	// not turn a write that is under way into an outage.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.Timeout)
	defer cancel()
	var err error
	if put {
		err = r.backend.Put(bctx, kind, name, data)
	} else {
		err = r.backend.Delete(bctx, kind, name)
	}
	if err != nil && storageFailure(err) {
		// The backend answered: its storage cannot take the change
		// (a full disk). Waiting in memory would answer the caller
		// with something a restart undoes, so the item is put back
		// as it was and the caller is told.
		restore()
		r.noteRefused(err)
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	if err != nil {
		if released {
			mirror()
		}
		r.dirty[k] = struct{}{}
		// markDown logs the outage, once; the change waits in the
		// dirty set, so the write has not failed for the caller.
		r.markDown(err)
		return nil
	}
	r.noteStored()
	if released {
		r.mirror.Delete(ctx, kind, name) // written: no longer pending
	}
	return nil
}

// noteRefused logs the first of a run of writes the backend refused
// (ErrNotStored) and keeps its error for Warning.
func (r *resilient) noteRefused(err error) {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	if r.refusedErr == "" {
		r.refusedSince = time.Now()
		r.log.Warn("keychain cannot store changes; requests that change state are refused until it can",
			zap.String("backend", r.backend.Backend()), zap.Error(err))
	}
	r.refusedErr = err.Error()
	r.refusedCause = err
}

// refusal returns the storage failure the backend answered the last
// write with, while no write has succeeded since, or nil.
func (r *resilient) refusal() error {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	if r.refusedErr == "" {
		return nil
	}
	return r.refusedCause
}

// noteStored ends a run of refused writes.
func (r *resilient) noteStored() {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	if r.refusedErr != "" {
		r.refusedErr = ""
		r.log.Info("keychain stores changes again", zap.String("backend", r.backend.Backend()))
	}
}

func (r *resilient) lockWrites(ctx context.Context) bool {
	select {
	case r.wmu <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *resilient) unlockWrites() { <-r.wmu }

// markDown records an outage and logs it once.
func (r *resilient) markDown(err error) {
	r.downMu.Lock()
	r.downErr = err.Error()
	if r.available.Swap(false) {
		r.downSince = time.Now()
		r.log.Warn("keychain not answering; the agent goes on in memory and writes through when it is back",
			zap.String("backend", r.backend.Backend()), zap.Error(err))
	}
	r.downMu.Unlock()
	r.kickProbe()
}

func (r *resilient) kickProbe() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// prober tries an unavailable backend every ProbeInterval, and after a
// kick (a write while down) when the last try is at least a second old.
func (r *resilient) prober() {
	defer close(r.done)
	t := time.NewTicker(r.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		case <-r.kick:
			last := time.Unix(0, r.lastProbe.Load())
			if wait := time.Second - time.Since(last); wait > 0 {
				select {
				case <-r.stop:
					return
				case <-time.After(wait):
				}
			}
		}
		if !r.available.Load() {
			r.recover(context.Background())
		}
	}
}

// recover pings the backend and, when it answers, writes the dirty set
// and marks it available again. It reports whether the backend is back.
//
// It holds the write lock for one item at a time, not for the whole
// dirty set: a keychain that has just come back can take a while over
// each write (gnome-keyring rewrites its file for each), and requests
// writing meanwhile must not wait behind all of them. Those writes see
// the backend still unavailable and join the dirty set; the flush ends,
// and the backend is available again, only when the set is empty under
// the lock, so no change made meanwhile is left behind.
func (r *resilient) recover(ctx context.Context) bool {
	r.lastProbe.Store(time.Now().UnixNano())
	pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	err := r.ping(pctx)
	cancel()
	if err != nil {
		r.noteDownErr(err)
		return false
	}
	r.recovering.Store(true)
	defer r.endFlush()
	n := 0
	for {
		done, err := r.flushOne(ctx)
		if err != nil {
			r.noteDownErr(err)
			return false
		}
		if done {
			break
		}
		n++
	}
	r.log.Info("keychain answers again; changes made meanwhile are written",
		zap.String("backend", r.backend.Backend()), zap.Int("written", n))
	return true
}

// flushOne writes one item of the dirty set under the write lock. When
// the set is empty it marks the backend available, still under the lock,
// and reports done.
func (r *resilient) flushOne(ctx context.Context) (done bool, err error) {
	if !r.lockWrites(ctx) {
		return false, ctx.Err()
	}
	defer r.unlockWrites()
	var k itemKey
	found := false
	for k = range r.dirty {
		found = true
		break
	}
	if !found {
		r.noteStored()
		r.available.Store(true)
		return true, nil
	}
	wctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	if data, gerr := r.mirror.Get(wctx, k.kind, k.name); gerr == nil {
		err = r.backend.Put(wctx, k.kind, k.name, data)
	} else {
		err = r.backend.Delete(wctx, k.kind, k.name)
	}
	if err != nil {
		if storageFailure(err) {
			r.noteRefused(err)
		}
		return false, err
	}
	delete(r.dirty, k)
	if r.isReleased(k.kind) {
		r.mirror.Delete(ctx, k.kind, k.name) // written: the caller holds it
	}
	return false, nil
}

// endFlush ends a flush, however it went, and wakes WaitFlushed.
func (r *resilient) endFlush() {
	r.downMu.Lock()
	r.recovering.Store(false)
	close(r.flushed)
	r.flushed = make(chan struct{})
	r.downMu.Unlock()
}

// WaitFlushed waits, until ctx is done, while the backend answers again
// and the changes made while it did not are being written, and reports
// whether every change is in the backend (it is available). A backend
// that is not answering is not waited for: the change stays in memory
// (docs/keychain.md). Waiting during the flush is what keeps it short:
// a request that changed state answers once its change is written, so
// clients that write faster than a just-recovered keychain takes it
// wait for it, rather than grow the set of changes it has to catch up
// with.
func (r *resilient) WaitFlushed(ctx context.Context) bool {
	for {
		if r.available.Load() {
			return true
		}
		r.downMu.Lock()
		ch := r.flushed
		recovering := r.recovering.Load()
		r.downMu.Unlock()
		if !recovering {
			return false
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return r.available.Load()
		}
	}
}

func (r *resilient) noteDownErr(err error) {
	r.downMu.Lock()
	r.downErr = err.Error()
	r.downMu.Unlock()
}

func (r *resilient) ping(ctx context.Context) error {
	if p, ok := r.backend.(pinger); ok {
		return p.Ping(ctx)
	}
	_, err := r.backend.List(ctx, KindKey)
	return err
}

// Available reports whether the backend answered its last call.
func (r *resilient) Available() bool { return r.available.Load() }

// Warning says what the user should know about where the items live.
func (r *resilient) Warning() string {
	var ws []string
	if r.fallback != "" {
		ws = append(ws, r.fallback)
	}
	if w, ok := r.backend.(Warner); ok && w.Warning() != "" {
		ws = append(ws, w.Warning())
	}
	r.downMu.Lock()
	if !r.available.Load() {
		ws = append(ws, fmt.Sprintf("keychain %s not answering since %s (%s): serving from memory; changes are written when it is back",
			r.backend.Backend(), r.downSince.UTC().Format(time.RFC3339), r.downErr))
	}
	if r.refusedErr != "" {
		ws = append(ws, fmt.Sprintf("keychain %s cannot store changes since %s (%s): requests that change state are refused",
			r.backend.Backend(), r.refusedSince.UTC().Format(time.RFC3339), r.refusedErr))
	}
	r.downMu.Unlock()
	return strings.Join(ws, "; ")
}

func (r *resilient) Backend() string { return r.backend.Backend() }

// Close stops the prober, tries once more to write what changed while the
// backend was down, and closes the backend.
func (r *resilient) Close() error {
	var err error
	r.closeOnce.Do(func() {
		if r.persistent {
			close(r.stop)
			<-r.done
			if !r.available.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*r.opts.Timeout)
				if !r.recover(ctx) {
					r.log.Warn("keychain still not answering at shutdown; changes since it stopped are lost",
						zap.String("backend", r.backend.Backend()))
				}
				cancel()
			}
		}
		err = r.backend.Close()
	})
	return err
}
