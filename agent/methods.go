package agent

import (
	"sync"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
)

// methodSet is the verification methods the agent offers, fixed at New,
// each with the lock that keeps two of its Completes from running at once.
type methodSet struct {
	impl map[string]method.Method
	mu   map[string]*sync.Mutex
}

func newMethodSet(ms []method.Method) *methodSet {
	s := &methodSet{impl: map[string]method.Method{}, mu: map[string]*sync.Mutex{}}
	for _, m := range ms {
		if m == nil {
			continue
		}
		s.impl[m.Name()] = m
		s.mu[m.Name()] = &sync.Mutex{}
	}
	s.mu[api.ExternalJWT] = &sync.Mutex{}
	return s
}

// get returns method m, or nil when the agent does not offer it.
func (s *methodSet) get(m string) method.Method { return s.impl[m] }

// lock takes m's lock and returns its unlock.
func (s *methodSet) lock(m string) func() {
	mu := s.mu[m]
	mu.Lock()
	return mu.Unlock
}
