package agent

import (
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// maxOpen bounds the custom-UI verifications and the enrollments open at
// once: each holds state (and may have sent an email or SMS) until it
// expires, and a client could otherwise open them without end.
const maxOpen = 64

// openStore owns operations under way that a later request finishes by id:
// custom-UI verifications (challenges) and enrollments. Each lives until
// its TTL, at most max are open at once, and each is finished once.
type openStore[T any] struct {
	what string // "verifications", "enrollments": for the error text
	ttl  time.Duration
	max  int

	mu    sync.Mutex
	items map[string]*open[T]
}

// open is one operation under way.
type open[T any] struct {
	ID      string
	Expires time.Time
	Val     T
}

func newOpenStore[T any](what string, ttl time.Duration, max int) *openStore[T] {
	return &openStore[T]{what: what, ttl: ttl, max: max, items: map[string]*open[T]{}}
}

// add opens v under a new random id, after dropping the expired ones; past
// the cap it refuses with rate_limited.
func (s *openStore[T]) add(v T, now time.Time) (*open[T], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.items) >= s.max {
		s.sweepLocked(now)
	}
	if len(s.items) >= s.max {
		e := api.Errorf(api.CodeRateLimited, "%d %s are already open; finish or let some expire first", s.max, s.what)
		e.Data.RetryAfterSeconds = 60
		return nil, e
	}
	o := &open[T]{ID: randomID(), Expires: now.Add(s.ttl), Val: v}
	s.items[o.ID] = o
	return o, nil
}

// get returns the live operation id (nil when unknown or expired; an
// expired one is dropped).
func (s *openStore[T]) get(id string, now time.Time) *open[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.items[id]
	if o != nil && !o.Expires.After(now) {
		delete(s.items, id)
		return nil
	}
	return o
}

// holds reports whether o is still open (not finished, removed or expired
// and swept).
func (s *openStore[T]) holds(o *open[T]) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.items[o.ID] == o
}

// take removes o and reports whether this call did: of several requests
// finishing one operation, exactly one takes it.
func (s *openStore[T]) take(o *open[T]) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items[o.ID] != o {
		return false
	}
	delete(s.items, o.ID)
	return true
}

// removeIf drops the operations whose value matches.
func (s *openStore[T]) removeIf(match func(T) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.items {
		if match(o.Val) {
			delete(s.items, id)
		}
	}
}

// sweep drops the expired operations.
func (s *openStore[T]) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
}

func (s *openStore[T]) sweepLocked(now time.Time) {
	for id, o := range s.items {
		if !o.Expires.After(now) {
			delete(s.items, id)
		}
	}
}

// count is the number of operations open (expired ones until a sweep).
func (s *openStore[T]) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}
