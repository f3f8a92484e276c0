package agent

import (
	"context"
	"slices"
	"sync"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/peer"
)

// flightGroup shares one prompt among the requests for the same key (the
// same route, method, scopes, details and key) whose callers the
// leader's binding admits: they get the token it mints. A caller outside
// that binding starts a flight of its own, whose prompt names it and
// waits its turn. A flight runs until it is answered or every waiting
// client has gone.
type flightGroup struct {
	mu      sync.Mutex
	flights map[string][]*flight
}

// flight is one shared prompt.
type flight struct {
	leader  *peer.Identity // the caller the token is minted for
	modes   []peer.Mode    // the scopes' bindings
	cancel  context.CancelFunc
	waiters int
	done    chan struct{}
	res     *api.TokenResult
	err     error
}

func newFlightGroup() *flightGroup { return &flightGroup{flights: map[string][]*flight{}} }

// do runs fn once for key while any caller waits for it, sharing it with
// the callers that modes admit beside the first one. fn's context is
// detached from any one caller's (it keeps the first caller's values)
// and cancelled when the last one leaves.
func (g *flightGroup) do(ctx context.Context, key string, modes []peer.Mode, fn func(context.Context) (*api.TokenResult, error)) (*api.TokenResult, error) {
	f := g.join(ctx, key, modes, fn)
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		g.leave(f)
		return nil, ctx.Err()
	}
}

func (g *flightGroup) join(ctx context.Context, key string, modes []peer.Mode, fn func(context.Context) (*api.TokenResult, error)) *flight {
	caller := peer.FromContext(ctx)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.flights[key] {
		if f.waiters > 0 && peer.AdmitsAll(f.modes, f.leader, caller) {
			f.waiters++
			return f
		}
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{leader: caller, modes: modes, cancel: cancel, done: make(chan struct{})}
	g.flights[key] = append(g.flights[key], f)
	go func() {
		defer close(f.done)
		defer cancel()
		f.res, f.err = fn(fctx)
		g.mu.Lock()
		defer g.mu.Unlock()
		fs := slices.DeleteFunc(g.flights[key], func(o *flight) bool { return o == f })
		if len(fs) == 0 {
			delete(g.flights, key)
		} else {
			g.flights[key] = fs
		}
	}()
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
