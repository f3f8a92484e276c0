package agent

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/keychain"
	"go.uber.org/zap"
)

// persister writes to the keychain in order, off the request path: a
// request changes memory and queues the write; a request that changes
// state waits for its writes (barrier) and is refused when one failed
// (docs/keychain.md, "Crash safety").
//
// A failed write fails closed. A write that grants something (a new
// token, a new credential) is undone in memory: what the agent could not
// store is not handed out. Every other write takes something away or
// records a use (a consumed token, a TOTP counter, a failure count, a
// removal) and stays in force in memory; it is tried again every
// retryInterval until the keychain takes it, so it is lost only if the
// agent dies before then.
type persister struct {
	store keychain.Store
	log   *zap.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []op
	busy     bool
	owed     uint64 // the newest seq answered before it was stored (owe), or 0
	closed   bool
	stopped  chan struct{}
	failing  bool
	queued   uint64       // ops pushed so far; an op's seq is queued after its push
	written  uint64       // ops tried so far, in order
	failures []failure    // recent failed ops, oldest first (at most maxFailures)
	lost     uint64       // seq of the newest failure dropped from failures
	retry    map[opKey]op // failed writes that take something away, to try again
	retryAt  time.Time    // when to try retry again
	timer    *time.Timer  // wakes run for retryAt
}

type op struct {
	kind, name string
	data       []byte // nil: delete
	seq        uint64
	// undo, set for a write that grants, takes the change back in
	// memory when the keychain refuses it; such a write is not retried.
	undo func()
	// commit, set for a write that grants, makes the grant usable once
	// the keychain took it (before any barrier waiting for it returns).
	commit func()
}

type opKey struct{ kind, name string }

type failure struct {
	seq uint64
	err error
}

const (
	maxFailures   = 1024
	retryInterval = time.Second
)

func newPersister(st keychain.Store, log *zap.Logger) *persister {
	p := &persister{store: st, log: log, stopped: make(chan struct{}), retry: map[opKey]op{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// put queues a write that records a use or a restriction: on failure it
// stays in force in memory and is retried.
func (p *persister) put(kind, name string, v any) { p.putOp(kind, name, v, nil, nil) }

// grant queues the write of something new that is handed out (a token, a
// credential): on failure undo takes it back in memory and the request is
// refused; once stored, commit (if set) makes it usable.
func (p *persister) grant(kind, name string, v any, undo, commit func()) {
	p.putOp(kind, name, v, undo, commit)
}

func (p *persister) putOp(kind, name string, v any, undo, commit func()) {
	data, err := json.Marshal(v)
	if err != nil {
		p.log.Error("cannot encode keychain item", zap.String("kind", kind), zap.Error(err))
		return
	}
	p.push(op{kind: kind, name: name, data: data, undo: undo, commit: commit})
}

func (p *persister) del(kind, name string) { p.push(op{kind: kind, name: name}) }

func (p *persister) push(o op) {
	p.mu.Lock()
	p.queued++
	o.seq = p.queued
	p.queue = append(p.queue, o)
	// The newest write of an item supersedes a retry of an older one.
	delete(p.retry, opKey{o.kind, o.name})
	p.mu.Unlock()
	p.cond.Broadcast()
}

// mark returns the position of the queue now, for barrier.
func (p *persister) mark() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued
}

// barrier waits until every write queued before the call has been tried,
// or until timeout. A request that changed what must survive a crash (a
// minted token, a consumed token, a TOTP counter, a failure count) calls
// it before it answers, so that an answer the client saw is never undone
// by kill -9. It returns the error of a write queued since from (mark)
// that the keychain refused: the request must then be refused. Backends
// bound each write by their own deadline; a keychain that is not
// answering keeps the change in memory (docs/keychain.md) and is no error
// here.
func (p *persister) barrier(from uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, p.cond.Broadcast)
	defer t.Stop()
	p.mu.Lock()
	target := p.queued
	for p.written < target && !p.closed && time.Now().Before(deadline) {
		p.cond.Wait()
	}
	p.mu.Unlock()
	return p.failedIn(from, target)
}

func (p *persister) run() {
	defer close(p.stopped)
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closed && !p.retryDue() {
			p.cond.Wait()
		}
		if len(p.queue) == 0 && p.closed {
			p.mu.Unlock()
			return
		}
		batch := p.queue
		p.queue = nil
		if len(batch) == 0 {
			// Only retries are due.
			batch = p.takeRetries()
		}
		p.busy = true
		p.mu.Unlock()
		for _, o := range batch {
			err := p.apply(o)
			if err == nil && o.commit != nil {
				o.commit() // without p.mu, like undo; before the barrier sees it written
			}
			p.mu.Lock()
			if o.seq > p.written {
				p.written = o.seq
			}
			p.settle(o, err)
			p.mu.Unlock()
			p.cond.Broadcast()
		}
		p.mu.Lock()
		p.busy = false
		p.mu.Unlock()
		p.cond.Broadcast()
	}
}

// retryDue reports whether failed writes wait and their time has come;
// otherwise it arms the timer that wakes run for them. Callers hold p.mu.
func (p *persister) retryDue() bool {
	if len(p.retry) == 0 {
		return false
	}
	wait := time.Until(p.retryAt)
	if wait <= 0 {
		return true
	}
	if p.timer == nil {
		p.timer = time.AfterFunc(wait, p.cond.Broadcast)
	} else {
		p.timer.Reset(wait)
	}
	return false
}

// takeRetries empties the retry set, oldest write first. Callers hold p.mu.
func (p *persister) takeRetries() []op {
	ops := make([]op, 0, len(p.retry))
	for k, o := range p.retry {
		ops = append(ops, o)
		delete(p.retry, k)
	}
	slices.SortFunc(ops, func(a, b op) int { return int(a.seq - b.seq) })
	return ops
}

// settle records how o went: a failure for barrier, a retry or an undo.
// Callers hold p.mu.
func (p *persister) settle(o op, err error) {
	k := opKey{o.kind, o.name}
	if err == nil {
		return
	}
	if o.seq > p.lastFailureSeq() {
		p.failures = append(p.failures, failure{seq: o.seq, err: err})
		if len(p.failures) > maxFailures {
			p.lost = p.failures[0].seq
			p.failures = slices.Delete(p.failures, 0, 1)
		}
	}
	if o.undo != nil {
		// Not retried: the change is taken back. The undo runs without
		// p.mu: it takes the owner's lock, which holds while queueing.
		p.mu.Unlock()
		o.undo()
		p.mu.Lock()
		return
	}
	if _, newer := p.retry[k]; !newer && !p.pushedAfter(k, o.seq) {
		p.retry[k] = o
		if len(p.retry) == 1 {
			p.retryAt = time.Now().Add(retryInterval)
		}
	}
}

func (p *persister) lastFailureSeq() uint64 {
	if len(p.failures) == 0 {
		return 0
	}
	return p.failures[len(p.failures)-1].seq
}

// pushedAfter reports whether a write of k newer than seq is queued.
// Callers hold p.mu.
func (p *persister) pushedAfter(k opKey, seq uint64) bool {
	for _, q := range p.queue {
		if q.seq > seq && q.kind == k.kind && q.name == k.name {
			return true
		}
	}
	return false
}

func (p *persister) apply(o op) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if o.data == nil {
		err = p.store.Delete(ctx, o.kind, o.name)
	} else {
		err = p.store.Put(ctx, o.kind, o.name, o.data)
	}
	if err != nil {
		if !p.failing {
			p.log.Warn("keychain write failed; requests that change state are refused, and what they took away stays in force in memory until it is written",
				zap.String("backend", p.store.Backend()), zap.Error(err))
		}
		p.failing = true
		return err
	}
	if p.failing {
		p.log.Info("keychain writes work again", zap.String("backend", p.store.Backend()))
	}
	p.failing = false
	return nil
}

// flush waits until the queue is empty and no write is under way (writes
// waiting for a retry are not waited for).
func (p *persister) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for (len(p.queue) > 0 || p.busy) && !p.closed {
		p.cond.Wait()
	}
}

// tried reports whether every write queued up to seq has been tried
// (written, refused, or kept in memory by a keychain not answering).
func (p *persister) tried(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written >= seq
}

// failedIn returns the error of a write queued in (from, to] that the
// keychain refused, or nil.
func (p *persister) failedIn(from, to uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if from < p.lost {
		// Failures since from were dropped from the record: assume
		// the worst.
		return p.failures[len(p.failures)-1].err
	}
	for i := len(p.failures) - 1; i >= 0 && p.failures[i].seq > from; i-- {
		if p.failures[i].seq <= to {
			return p.failures[i].err
		}
	}
	return nil
}

// retryUpTo reports whether a refused write queued up to seq waits for a
// retry: it is in force in memory only.
func (p *persister) retryUpTo(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.retry {
		if o.seq <= seq {
			return true
		}
	}
	return false
}

// owe records that a request was answered as done before its writes,
// queued up to seq, were stored (its wait for the keychain ran out, or
// the keychain was not answering): a kill -9 now would lose them.
func (p *persister) owe(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.owed = max(p.owed, seq)
}

// owes reports whether an answered change may not be stored yet. stored
// says whether the keychain holds every change tried so far (it answers
// and has written what it kept in memory); a debt is settled once every
// write up to it has been tried and the keychain then holds them.
func (p *persister) owes(stored func() bool) bool {
	p.mu.Lock()
	owed, written := p.owed, p.written
	p.mu.Unlock()
	if owed == 0 {
		return false
	}
	if written < owed || p.retryUpTo(owed) || !stored() {
		return true
	}
	p.mu.Lock()
	if p.owed == owed {
		p.owed = 0
	}
	p.mu.Unlock()
	return false
}

// pending is the number of failed writes waiting for a retry.
func (p *persister) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.retry)
}

// close writes what is queued, tries the failed writes once more, and
// stops.
func (p *persister) close() {
	p.mu.Lock()
	p.closed = true
	p.retryAt = time.Time{}
	p.mu.Unlock()
	p.cond.Broadcast()
	select {
	case <-p.stopped:
	case <-time.After(10 * time.Second):
		p.log.Warn("keychain writes did not finish before shutdown")
		return
	}
	p.mu.Lock()
	ops := p.takeRetries()
	p.mu.Unlock()
	lost := 0
	for _, o := range ops {
		if p.apply(o) != nil {
			lost++
		}
	}
	if lost > 0 {
		p.log.Warn("keychain writes still failing at shutdown; these changes are lost",
			zap.Int("writes", lost), zap.String("backend", p.store.Backend()))
	}
}
