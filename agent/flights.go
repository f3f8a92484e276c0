package agent

import (
	"context"
	"sync"

	"github.com/stepup-agent/stepup-agent/api"
)

// flightGroup shares one prompt among every request for the same key (the
// same route, method and scopes): it runs until it is answered or every
// waiting client has gone.
type flightGroup struct {
	mu      sync.Mutex
	flights map[string]*flight
}

// flight is one shared prompt.
type flight struct {
	cancel  context.CancelFunc
	waiters int
	done    chan struct{}
	res     *api.TokenResult
	err     error
}

func newFlightGroup() *flightGroup { return &flightGroup{flights: map[string]*flight{}} }

// do runs fn once for key while any caller waits for it. fn's context is
// detached from any one caller's and cancelled when the last one leaves.
func (g *flightGroup) do(ctx context.Context, key string, fn func(context.Context) (*api.TokenResult, error)) (*api.TokenResult, error) {
	f := g.join(ctx, key, fn)
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		g.leave(f)
		return nil, ctx.Err()
	}
}

func (g *flightGroup) join(ctx context.Context, key string, fn func(context.Context) (*api.TokenResult, error)) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.flights[key]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{cancel: cancel, done: make(chan struct{})}
		g.flights[key] = f
		go func() {
			defer close(f.done)
			defer cancel()
			f.res, f.err = fn(fctx)
			g.mu.Lock()
			defer g.mu.Unlock()
			delete(g.flights, key)
		}()
	}
	f.waiters++
	return f
}

// leave drops one waiter; the last one dismisses the prompt.
func (g *flightGroup) leave(f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		f.cancel()
	}
}
