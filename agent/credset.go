package agent

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
)

// credSet owns the enrolled credentials; every change is queued for the
// keychain. It hands out copies, so a method's Complete can update a
// credential's Secret without touching the set until the agent stores it.
type credSet struct {
	persist *persister

	mu    sync.Mutex
	creds map[string]*method.Credential
	// gen counts the changes to creds (under mu): what is computed from
	// the credentials (the offers isStepUpRequired caches) is valid while
	// gen is the same.
	gen atomic.Uint64
}

func newCredSet(p *persister) *credSet {
	return &credSet{persist: p, creds: map[string]*method.Credential{}}
}

// load holds c as read from the keychain.
func (s *credSet) load(c *method.Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds[c.ID] = c
	s.gen.Add(1)
}

// add stores a new credential (or replaces one with its id). When the
// keychain refuses the write the credential is forgotten again (the
// enrollment is refused).
func (s *credSet) add(c *method.Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds[c.ID] = c
	s.gen.Add(1)
	s.persist.grant(keychain.KindCredential, c.ID, c, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.creds[c.ID] == c {
			delete(s.creds, c.ID)
			s.gen.Add(1)
		}
	}, nil)
}

// update stores c only if a credential with its id is still enrolled (it
// was not removed while the method checked an answer).
func (s *credSet) update(c *method.Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.creds[c.ID]; ok {
		s.creds[c.ID] = c
		s.gen.Add(1)
		s.persist.put(keychain.KindCredential, c.ID, c)
	}
}

// get returns a copy of the credential id.
func (s *credSet) get(id string) (method.Credential, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.creds[id]
	if !ok {
		return method.Credential{}, false
	}
	return *c, true
}

// remove drops the credential id and reports whether it was enrolled.
func (s *credSet) remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.creds[id]; !ok {
		return false
	}
	delete(s.creds, id)
	s.gen.Add(1)
	s.persist.del(keychain.KindCredential, id)
	return true
}

// removeMethod drops every credential of method m and returns their ids.
func (s *credSet) removeMethod(m string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, c := range s.creds {
		if c.Method == m {
			delete(s.creds, id)
			s.gen.Add(1)
			s.persist.del(keychain.KindCredential, id)
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// of returns copies of the credentials of method m.
func (s *credSet) of(m string) []*method.Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*method.Credential
	for _, c := range s.creds {
		if c.Method == m {
			cc := *c
			out = append(out, &cc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// all returns copies of every credential, oldest first.
func (s *credSet) all() []method.Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]method.Credential, 0, len(s.creds))
	for _, c := range s.creds {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// hasMFA reports whether an MFA credential is enrolled.
func (s *credSet) hasMFA() bool {
	return s.any(func(c *method.Credential) bool { return api.IsMFA(c.Method) })
}

// hasPrimary reports whether an MFA credential other than recovery codes
// is enrolled (what recovery codes recover).
func (s *credSet) hasPrimary() bool {
	return s.any(func(c *method.Credential) bool { return api.IsMFA(c.Method) && c.Method != api.RecoveryCode })
}

func (s *credSet) any(match func(*method.Credential) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.creds {
		if match(c) {
			return true
		}
	}
	return false
}

// count is the number of credentials enrolled.
func (s *credSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.creds)
}
