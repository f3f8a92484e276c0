package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// trimAfter is how long the agent waits, once its last client is gone,
// before it hands freed memory back to the system.
const trimAfter = time.Second

// trimAtLeast is how much the agent must have allocated since the last
// trim for a new one to be worth its collection: a burst, not a poll.
const trimAtLeast = 1 << 20

// trimmer gives the heap a burst of clients left free back to the system
// once the agent is idle. The collector frees it but the scavenger
// returns it slowly (minutes for a few MiB), so an agent that served a
// load stayed larger than one that never did; an idle agent has nothing
// better to spend a millisecond on. The state is the timer, armed again
// by every last-connection close, so that a steady stream of short
// connections (a shell loop) trims once, when it stops.
type trimmer struct {
	// busy reports open connections; a trim finds the agent busy
	// again is skipped (the next idle arms it again).
	busy func() bool

	mu    sync.Mutex
	timer *time.Timer

	// trimMu serializes trims (a timer re-armed while one runs);
	// trimmedAt is the allocation count at the last one; owed says the
	// start-up trim found a client and is still to run, whatever was
	// allocated since.
	trimMu    sync.Mutex
	sample    [1]metrics.Sample
	trimmedAt uint64
	owed      bool
}

// idle is ipc.Server.Idle.
func (t *trimmer) idle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer == nil {
		t.timer = time.AfterFunc(trimAfter, t.fire)
		return
	}
	t.timer.Reset(trimAfter)
}

func (t *trimmer) fire() {
	if t.busy != nil && t.busy() {
		return // a client came back: no collection in the middle of its load
	}
	t.trim()
}

func (t *trimmer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
	}
}

// allocated reads the bytes allocated since the process started.
func (t *trimmer) allocated() (uint64, bool) {
	t.sample[0].Name = "/gc/heap/allocs:bytes"
	metrics.Read(t.sample[:])
	v := t.sample[0].Value
	if v.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return v.Uint64(), true
}

// trim collects and returns the free heap to the system when enough was
// allocated since the last trim. (The free heap before a collection is
// no guide: what the burst left is garbage until the collector runs.)
func (t *trimmer) trim() {
	t.trimMu.Lock()
	defer t.trimMu.Unlock()
	if n, ok := t.allocated(); !t.owed && (!ok || n-t.trimmedAt < trimAtLeast) {
		return
	}
	t.collect()
}

// started trims once start-up is over, whatever it allocated: its code
// (package init, the policy's parsing, the keychain's first open) runs
// once and need not stay resident. An agent already serving a client
// (socket activation) is trimmed when that client leaves instead.
func (t *trimmer) started() {
	t.trimMu.Lock()
	defer t.trimMu.Unlock()
	if t.busy != nil && t.busy() {
		t.owed = true
		return
	}
	t.collect()
}

// collect runs with trimMu held.
func (t *trimmer) collect() {
	// Two collections: the first moves what sync.Pools hold (the
	// server's line buffers) to their victim caches, the second frees
	// it; FreeOSMemory's own collection then hands the free heap back.
	runtime.GC()
	debug.FreeOSMemory()
	// The code the burst (or start-up) ran is unmapped too; what the
	// next request runs faults back in from the page cache.
	dropCode()
	t.trimmedAt, _ = t.allocated()
	t.owed = false
}
