package reload

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// Holder is the policy in force and what status says of it. Get is
// lock-free (every request reads the policy); Apply takes the result of a
// load (at start, on SIGHUP, when the file changes).
type Holder struct {
	cur atomic.Pointer[policy.Policy]
	log *zap.Logger
	now func() time.Time

	mu      sync.Mutex
	status  api.PolicyStatus
	onApply []func(*policy.Policy)
	onLoad  []func(path string, err error)
	loaded  bool // a load was applied (status.Error is its error)
}

// NewHolder returns a holder of the built-in defaults for the policy file
// at path; nothing is loaded yet.
func NewHolder(path string, log *zap.Logger, now func() time.Time) *Holder {
	if now == nil {
		now = time.Now
	}
	h := &Holder{log: log, now: now, status: api.PolicyStatus{Path: path}}
	h.cur.Store(policy.Default())
	return h
}

// Apply takes the result of a load (Load's results): a good policy
// replaces the one in force and is handed to every OnApply function; a
// broken one is reported and the last good one stays.
func (h *Holder) Apply(p *policy.Policy, exists bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.loaded = true
	for _, fn := range h.onLoad {
		fn(h.status.Path, err)
	}
	if err != nil {
		h.status.Error = err.Error()
		h.log.Error("policy not loaded; the last good policy stays in force", zap.Error(err))
		return
	}
	h.cur.Store(p)
	h.status.Error = ""
	h.status.LoadedAt = h.now().UTC().Truncate(time.Second)
	h.status.Builtin = !exists
	if exists {
		h.log.Info("policy loaded", zap.String("path", h.status.Path))
	} else {
		h.log.Info("no policy file; using the built-in defaults", zap.String("path", h.status.Path))
	}
	for _, fn := range h.onApply {
		fn(p)
	}
}

// OnApply calls fn with the policy in force now and with every policy
// applied later.
func (h *Holder) OnApply(fn func(*policy.Policy)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onApply = append(h.onApply, fn)
	fn(h.cur.Load())
}

// OnLoad calls fn with the result of every load applied from now on, and
// at once with the last one applied before (for the audit log, which
// opens after the load at start).
func (h *Holder) OnLoad(fn func(path string, err error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onLoad = append(h.onLoad, fn)
	if h.loaded {
		var err error
		if h.status.Error != "" {
			err = errors.New(h.status.Error)
		}
		fn(h.status.Path, err)
	}
}

// Get returns the policy in force.
func (h *Holder) Get() *policy.Policy { return h.cur.Load() }

// Status describes the policy for status.
func (h *Holder) Status() api.PolicyStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status
}
