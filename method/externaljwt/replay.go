package externaljwt

import (
	"encoding/json"
	"sync"
	"time"
)

// ReplayCache remembers the jtis of accepted assertions until they expire,
// so that each is accepted once. It is safe for concurrent use. Export and
// Import let the agent persist it (the keychain), so a restart does not
// reopen the window.
type ReplayCache struct {
	mu     sync.Mutex
	m      map[string]time.Time
	margin time.Duration
	now    func() time.Time
}

// NewReplayCache returns an empty cache. Entries are kept until their
// expiry plus the verifier's largest leeway, since an assertion is
// accepted that long after its exp. now nil means time.Now.
func NewReplayCache(now func() time.Time) *ReplayCache {
	if now == nil {
		now = time.Now
	}
	return &ReplayCache{m: map[string]time.Time{}, margin: MaxLeeway, now: now}
}

// Use records jti, valid until exp, and reports whether it was new. A jti
// seen before (and not yet expired) returns false: refuse the assertion.
func (c *ReplayCache) Use(jti string, exp time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.sweep(now)
	if until, ok := c.m[jti]; ok && now.Before(until) {
		return false
	}
	c.m[jti] = exp.Add(c.margin)
	return true
}

// Seen reports whether jti is held and not expired.
func (c *ReplayCache) Seen(jti string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.m[jti]
	return ok && c.now().Before(until)
}

// Len returns the number of entries held (expired ones included until the
// next sweep).
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// sweep drops expired entries. Callers hold c.mu.
func (c *ReplayCache) sweep(now time.Time) {
	for k, until := range c.m {
		if !now.Before(until) {
			delete(c.m, k)
		}
	}
}

// Export returns the live entries: jti -> the time until which it is kept.
func (c *ReplayCache) Export() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.sweep(now)
	out := make(map[string]time.Time, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// Import adds entries made by Export (expired ones are dropped; a jti held
// already keeps the later time).
func (c *ReplayCache) Import(entries map[string]time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for k, v := range entries {
		if !now.Before(v) {
			continue
		}
		if old, ok := c.m[k]; !ok || v.After(old) {
			c.m[k] = v
		}
	}
}

// MarshalJSON writes Export as a JSON object.
func (c *ReplayCache) MarshalJSON() ([]byte, error) { return json.Marshal(c.Export()) }

// UnmarshalJSON Imports a JSON object written by MarshalJSON.
func (c *ReplayCache) UnmarshalJSON(b []byte) error {
	var m map[string]time.Time
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m, c.margin, c.now = map[string]time.Time{}, MaxLeeway, time.Now
	}
	c.mu.Unlock()
	c.Import(m)
	return nil
}
