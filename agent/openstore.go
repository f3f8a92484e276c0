package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/peer"
)

// The caps on operations open at once (custom-UI verifications,
// enrollments): each holds state (and may have sent an email or SMS, or
// opened a passkey page) until it expires, and a client could otherwise
// open them without end.
const (
	// maxOpen is the global ceiling on ordinary operations.
	maxOpen = 64
	// maxOpenPerClient bounds what one client (one peer process) holds,
	// so one client at its cap leaves room for every other.
	maxOpenPerClient = 8
	// openReserve is room of its own for priority operations
	// (verifications that unlock the agent): ordinary ones from many
	// clients at once cannot starve an unlock. A client holds at most
	// one priority operation (a second replaces its first), and when the
	// room is full a new one replaces the oldest, so no number of
	// processes can keep an unlock out.
	openReserve = 8
)

// openStore owns operations under way that a later request finishes by id:
// custom-UI verifications (challenges) and enrollments. Each lives until
// its TTL, each is finished once, and the store bounds how many are open:
// perOwner per client, max ordinary ones in all, and spare priority ones
// in all, one per client.
type openStore[T any] struct {
	what     string // "verifications", "enrollments": for the error text
	ttl      time.Duration
	max      int
	perOwner int
	spare    int

	mu    sync.Mutex
	items map[string]*open[T]
}

// open is one operation under way. A reserved one (not yet filled) holds
// its place in the caps but is not found by id.
type open[T any] struct {
	ID      string
	Owner   string
	Expires time.Time
	Val     T
	ready   bool
	prio    bool
}

func newOpenStore[T any](what string, ttl time.Duration, max, perOwner, reserve int) *openStore[T] {
	return &openStore[T]{what: what, ttl: ttl, max: max, perOwner: perOwner, spare: reserve, items: map[string]*open[T]{}}
}

// ownerOf names the client a request comes from for the per-client caps:
// its peer process (pid and start time, so a reused pid is another
// client), or "local" outside a connection.
func ownerOf(ctx context.Context) string {
	if p := peer.FromContext(ctx); p != nil {
		return fmt.Sprintf("pid:%d:%d", p.PID, p.Start)
	}
	return "local"
}

// reserve holds a place for an operation of owner before the work of
// opening it is done (a passkey page, an email), so that past a cap
// nothing is started. Fill it with fill, or give it back with release.
func (s *openStore[T]) reserve(owner string, priority bool, now time.Time) (*open[T], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	if priority {
		// One per client: a client's new one replaces its old one.
		for id, o := range s.items {
			if o.prio && o.Owner == owner {
				delete(s.items, id)
			}
		}
	}
	if n := s.ownedLocked(owner); n >= s.perOwner {
		e := api.Errorf(api.CodeRateLimited, "this client already has %d %s open, the most one client may; finish or let some expire first", n, s.what).
			WithHint("finish the open ones (or let them expire after %s) before starting more", s.ttl)
		e.Data.RetryAfterSeconds = 60
		return nil, e
	}
	if priority && s.classLocked(true) >= s.spare {
		s.dropOldestPriorityLocked()
	}
	if !priority && s.classLocked(false) >= s.max {
		e := api.Errorf(api.CodeRateLimited, "%d %s are already open; finish or let some expire first", s.max, s.what)
		e.Data.RetryAfterSeconds = 60
		return nil, e
	}
	o := &open[T]{ID: randomID(), Owner: owner, Expires: now.Add(s.ttl), prio: priority}
	s.items[o.ID] = o
	return o, nil
}

// dropOldestPriorityLocked makes room for a priority operation: the one
// opened first gives way (its completion then finds no such
// verification), so that the room cannot be held shut.
func (s *openStore[T]) dropOldestPriorityLocked() {
	var oldest *open[T]
	for _, o := range s.items {
		if o.prio && (oldest == nil || o.Expires.Before(oldest.Expires)) {
			oldest = o
		}
	}
	if oldest != nil {
		delete(s.items, oldest.ID)
	}
}

// classLocked counts the open operations of one class (priority or not).
func (s *openStore[T]) classLocked(priority bool) int {
	n := 0
	for _, o := range s.items {
		if o.prio == priority {
			n++
		}
	}
	return n
}

// fill makes a reserved operation v, findable by its id from now on.
func (s *openStore[T]) fill(o *open[T], v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o.Val, o.ready = v, true
}

// release gives back a reserved place that was not filled.
func (s *openStore[T]) release(o *open[T]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items[o.ID] == o && !o.ready {
		delete(s.items, o.ID)
	}
}

// add opens v for owner under a new random id, after dropping the
// expired ones; past a cap it refuses with rate_limited.
func (s *openStore[T]) add(v T, owner string, now time.Time) (*open[T], error) {
	o, err := s.reserve(owner, false, now)
	if err != nil {
		return nil, err
	}
	s.fill(o, v)
	return o, nil
}

func (s *openStore[T]) ownedLocked(owner string) int {
	n := 0
	for _, o := range s.items {
		if o.Owner == owner {
			n++
		}
	}
	return n
}

// get returns the live operation id (nil when unknown, reserved or
// expired; an expired one is dropped).
func (s *openStore[T]) get(id string, now time.Time) *open[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.items[id]
	if o == nil || !o.ready {
		return nil
	}
	if !o.Expires.After(now) {
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

// removeIf drops the (filled) operations whose value matches.
func (s *openStore[T]) removeIf(match func(T) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.items {
		if o.ready && match(o.Val) {
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
