package agent

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/keychain"
	"go.uber.org/zap"
)

// persister writes to the keychain in order, off the request path: a
// request changes memory and queues the write; the answer never waits for
// the keychain (docs/keychain.md).
type persister struct {
	store keychain.Store
	log   *zap.Logger

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []op
	busy       bool
	closed     bool
	stopped    chan struct{}
	failing    bool
	closedWait bool   // a barrier's timeout fired
	queued     uint64 // ops pushed so far
	written    uint64 // ops tried so far
}

type op struct {
	kind, name string
	data       []byte // nil: delete
}

func newPersister(st keychain.Store, log *zap.Logger) *persister {
	p := &persister{store: st, log: log, stopped: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *persister) put(kind, name string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		p.log.Error("cannot encode keychain item", zap.String("kind", kind), zap.Error(err))
		return
	}
	p.push(op{kind: kind, name: name, data: data})
}

func (p *persister) del(kind, name string) { p.push(op{kind: kind, name: name}) }

func (p *persister) push(o op) {
	p.mu.Lock()
	p.queue = append(p.queue, o)
	p.queued++
	p.mu.Unlock()
	p.cond.Broadcast()
}

// barrier waits until every write queued before the call has been tried,
// or until timeout. A request that changed what must survive a crash (a
// consumed token, a TOTP counter, a failure count) calls it before it
// answers, so that an answer the client saw is never undone by kill -9.
// Backends bound each write by their own deadline.
func (p *persister) barrier(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, p.cond.Broadcast)
	defer t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	target := p.queued
	for p.written < target && !p.closed && time.Now().Before(deadline) {
		p.cond.Wait()
	}
}

func (p *persister) run() {
	defer close(p.stopped)
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closed {
			p.cond.Wait()
		}
		if len(p.queue) == 0 && p.closed {
			p.mu.Unlock()
			return
		}
		batch := p.queue
		p.queue = nil
		p.busy = true
		p.mu.Unlock()
		for _, o := range batch {
			p.apply(o)
			p.mu.Lock()
			p.written++
			p.mu.Unlock()
			p.cond.Broadcast()
		}
		p.mu.Lock()
		p.busy = false
		p.mu.Unlock()
		p.cond.Broadcast()
	}
}

func (p *persister) apply(o op) {
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
			p.log.Warn("keychain write failed; the agent goes on in memory", zap.String("backend", p.store.Backend()), zap.Error(err))
		}
		p.failing = true
		return
	}
	if p.failing {
		p.log.Info("keychain writes work again", zap.String("backend", p.store.Backend()))
	}
	p.failing = false
}

// flush waits until the queue is empty and no write is under way.
func (p *persister) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for (len(p.queue) > 0 || p.busy) && !p.closed {
		p.cond.Wait()
	}
}

// close writes what is queued and stops.
func (p *persister) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
	select {
	case <-p.stopped:
	case <-time.After(10 * time.Second):
		p.log.Warn("keychain writes did not finish before shutdown")
	}
}
