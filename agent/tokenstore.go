package agent

import (
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/peer"
)

// held is a token the agent holds. Its JSON form is what the keychain
// keeps (kind token, named by jti).
type held struct {
	JTI       string    `json:"jti"`
	Token     string    `json:"token"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
	Method    string    `json:"method"`
	// Remote names the SSH connection a remote caller stepped up
	// through (peer.Identity.Remote); "" for a local caller. remote.go.
	Remote string `json:"remote,omitempty"`

	// Binding (DESIGN.md, "Caller and action binding"): the caller that
	// stepped up, its scopes' bind modes when it was minted, the
	// canonical form of the approved details ("" for none) and the key
	// the token is bound to. A token without a Minter (persisted before
	// binding existed) is dropped at load.
	Minter  *peer.Identity `json:"minter,omitempty"`
	Bind    []peer.Mode    `json:"bind,omitempty"`
	Details string         `json:"details,omitempty"`
	Cnf     *api.Cnf       `json:"cnf,omitempty"`

	// state is heldStored, or for a newly minted token heldPending
	// until the keychain took its write: no request is handed it, nor
	// may verify it, before, so that a mint the keychain refuses (and
	// undoes) never gave a token out meanwhile. A mint whose write was
	// not stored by its answer's deadline is abandoned (heldAbandoned)
	// and refused. Tokens read back at start are stored (the zero value).
	state atomic.Int32
}

const (
	heldStored int32 = iota
	heldPending
	heldAbandoned
)

// usable reports whether h may be handed out or verified.
func (h *held) usable() bool { return h.state.Load() == heldStored }

// want is what a request asks a held token to match: its caller, the
// canonical details and the key.
type want struct {
	caller  *peer.Identity
	details string
	cnf     *api.Cnf
}

// matches reports whether h is for the action and key w names (equal
// details, the same key or none on both sides).
func (h *held) matches(w want) bool {
	return h.Details == w.details && h.Cnf.Same(w.cnf)
}

// admits reports whether h's binding hands it to w's caller.
func (h *held) admits(w want) bool {
	return peer.AdmitsAll(h.Bind, h.Minter, w.caller)
}

// better reports whether h should be handed out before old: a multi-use
// token before a single-use one, then the one that lives longer.
func better(h, old *held) bool {
	if h.SingleUse != old.SingleUse {
		return !h.SingleUse
	}
	return h.ExpiresAt.After(old.ExpiresAt)
}

// tokenStore owns the tokens the agent holds: by jti, by scope, and the
// ids of single-use tokens already consumed (so that verifyToken can say
// "already used" rather than "revoked"). Every change is queued for the
// keychain.
type tokenStore struct {
	persist  *persister
	consumed *expirySet

	mu      sync.Mutex
	byJTI   map[string]*held
	byToken map[string]*held   // the same tokens by their compact JWS (verifyToken)
	byScope map[string][]*held // every live token of each scope, unordered
	minters minterSet          // one Identity per distinct minter
}

func newTokenStore(p *persister) *tokenStore {
	return &tokenStore{
		persist:  p,
		consumed: newExpirySet(keychain.KindConsumed, p),
		byJTI:    map[string]*held{},
		byToken:  map[string]*held{},
		byScope:  map[string][]*held{},
		minters:  minterSet{byKey: map[string]*minterRef{}, refs: map[*peer.Identity]*minterRef{}},
	}
}

// minterSet holds one copy of each distinct minter identity: the tokens
// one program stepped up for (over several connections, or read back
// from the keychain, each its own decoded copy) share it. An identity
// is a few hundred bytes (paths, the parent chain), as much as the rest
// of a held token. Identities are never changed once read, so sharing
// one is safe.
type minterSet struct {
	byKey map[string]*minterRef
	refs  map[*peer.Identity]*minterRef
}

type minterRef struct {
	key string
	id  *peer.Identity
	n   int // tokens held that point to id
}

// share returns the held copy of an identity equal to id, holding it
// once more. Callers hold the token store's lock.
func (m *minterSet) share(id *peer.Identity) *peer.Identity {
	if id == nil {
		return nil
	}
	if r, ok := m.refs[id]; ok {
		r.n++
		return id
	}
	b, err := json.Marshal(id)
	if err != nil {
		return id
	}
	key := string(b)
	r, ok := m.byKey[key]
	if !ok {
		r = &minterRef{key: key, id: id}
		m.byKey[key] = r
		m.refs[id] = r
	}
	r.n++
	return r.id
}

// release lets go of one hold of id (from share).
func (m *minterSet) release(id *peer.Identity) {
	r, ok := m.refs[id]
	if !ok {
		return
	}
	if r.n--; r.n == 0 {
		delete(m.refs, id)
		delete(m.byKey, r.key)
	}
}

// load holds h as read from the keychain (nothing is written). It
// reports false, holding nothing, when a token of h's jti is held
// already.
func (s *tokenStore) load(h *held) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byJTI[h.JTI] != nil {
		return false
	}
	s.index(h)
	return true
}

// add holds a newly minted token and queues its write. When the keychain
// refuses the write the token is forgotten again (the mint is refused).
func (s *tokenStore) add(h *held) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.state.Store(heldPending)
	s.index(h)
	s.persist.grant(keychain.KindToken, h.JTI, h, func() { s.forget(h) }, func() { s.stored(h) })
}

// stored makes a minted token usable once the keychain took its write.
// If the mint was abandoned meanwhile, the keychain's copy is deleted.
func (s *tokenStore) stored(h *held) {
	if !h.state.CompareAndSwap(heldPending, heldStored) && h.state.Load() == heldAbandoned {
		s.persist.del(keychain.KindToken, h.JTI)
	}
}

// abandon gives up a minted token whose write is not stored yet (its
// request's answer cannot wait longer): it is forgotten, never handed
// out, and deleted from the keychain if its write lands after all. It
// reports whether h was abandoned (false: it is stored, or was refused).
func (s *tokenStore) abandon(h *held) bool {
	if !h.state.CompareAndSwap(heldPending, heldAbandoned) {
		return false
	}
	s.forget(h)
	return true
}

// forget drops h from memory only: its write was refused, so the
// keychain never had it.
func (s *tokenStore) forget(h *held) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unindex(h)
}

func (s *tokenStore) index(h *held) {
	h.Minter = s.minters.share(h.Minter)
	s.byJTI[h.JTI] = h
	s.byToken[h.Token] = h
	for _, sc := range h.Scopes {
		s.byScope[sc] = append(s.byScope[sc], h)
	}
}

// best returns the token to hand out for scope to a caller through the
// remote connection remote ("" for a local caller); nil: none is live.
func (s *tokenStore) best(scope string, now time.Time, remote string) *held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bestOf(s.byScope[scope], now, remote)
}

// bestFor returns the token to hand out for scope to the request w: a
// live one for w's details and key whose binding admits w's caller. When
// none is, refused is a live matching token the binding keeps from the
// caller (nil if there is none), for getToken's hint. It does not
// allocate: isStepUpRequired runs it.
func (s *tokenStore) bestFor(scope string, now time.Time, w want) (h, refused *held) {
	return s.bestAt(scope, func() time.Time { return now }, w)
}

// bestAt is bestFor reading the clock only when a token for scope is
// held: on the hot path of isStepUpRequired, most scopes have none, and a
// clock read is a good part of the request's cost on a VM. clock runs
// under the store's lock: it must not call back into the agent (the
// agent's Config.Now is a plain clock).
func (s *tokenStore) bestAt(scope string, clock func() time.Time, w want) (h, refused *held) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.byScope[scope]
	if len(ts) == 0 {
		return nil, nil
	}
	now := clock()
	for _, t := range ts {
		if !t.ExpiresAt.After(now) || !t.usable() || !t.matches(w) {
			continue
		}
		if !t.admits(w) {
			if refused == nil || better(t, refused) {
				refused = t
			}
			continue
		}
		if h == nil || better(t, h) {
			h = t
		}
	}
	if h != nil {
		refused = nil
	}
	return h, refused
}

func bestOf(hs []*held, now time.Time, remote string) *held {
	var b *held
	for _, h := range hs {
		if (remote == anyCaller || h.Remote == remote) && h.ExpiresAt.After(now) && h.usable() && (b == nil || better(h, b)) {
			b = h
		}
	}
	return b
}

// get returns the token with jti, or nil.
func (s *tokenStore) get(jti string) *held {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.byJTI[jti]; h != nil && h.usable() {
		return h
	}
	return nil
}

// heldToken returns the usable token held as exactly tok, or nil.
func (s *tokenStore) heldToken(tok string) *held {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.byToken[tok]; h != nil && h.usable() {
		return h
	}
	return nil
}

// drop forgets h and queues the delete. It reports whether h was held.
func (s *tokenStore) drop(h *held) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropLocked(h)
}

func (s *tokenStore) dropLocked(h *held) bool {
	if !s.unindex(h) {
		return false
	}
	s.persist.del(keychain.KindToken, h.JTI)
	return true
}

// unindex removes h from the maps and reports whether it was held.
// Callers hold s.mu.
func (s *tokenStore) unindex(h *held) bool {
	if s.byJTI[h.JTI] != h {
		return false
	}
	delete(s.byJTI, h.JTI)
	if s.byToken[h.Token] == h {
		delete(s.byToken, h.Token)
	}
	s.minters.release(h.Minter)
	for _, sc := range h.Scopes {
		hs := slices.DeleteFunc(s.byScope[sc], func(o *held) bool { return o == h })
		if len(hs) == 0 {
			delete(s.byScope, sc)
		} else {
			s.byScope[sc] = hs
		}
	}
	return true
}

// consume drops a single-use token and remembers its jti until it would
// have expired. It reports false when h was no longer held (another
// request consumed or revoked it first).
func (s *tokenStore) consume(h *held) bool {
	if !s.drop(h) {
		return false
	}
	s.consumed.add(h.JTI, h.ExpiresAt)
	return true
}

// wasConsumed reports whether jti is a consumed single-use token.
func (s *tokenStore) wasConsumed(jti string) bool { return s.consumed.has(jti) }

// revoke drops the tokens that carry any of scopes (every token when
// scopes is empty) and returns how many: the tokens stepped up through
// the remote connection remote, or every token for anyCaller.
func (s *tokenStore) revoke(remote string, scopes []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, h := range s.byJTI {
		if remote != anyCaller && h.Remote != remote {
			continue
		}
		hit := len(scopes) == 0
		for _, sc := range scopes {
			hit = hit || slices.Contains(h.Scopes, sc)
		}
		if hit && s.dropLocked(h) {
			n++
		}
	}
	return n
}

// sweep drops the expired tokens and consumed ids.
func (s *tokenStore) sweep(now time.Time) {
	s.consumed.sweep(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.byJTI {
		if !h.ExpiresAt.After(now) {
			s.dropLocked(h)
		}
	}
}

// count is the number of tokens held (expired ones until the next sweep).
func (s *tokenStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byJTI)
}

// status lists every live token under each of its scopes, with whom it
// is bound to: with binding, one scope may hold tokens of several
// callers. remote is a remote connection's key, to list only the tokens
// stepped up through it, or anyCaller for all of them.
func (s *tokenStore) status(now time.Time, remote string) []api.TokenStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.TokenStatus{}
	for sc, hs := range s.byScope {
		for _, h := range hs {
			if !h.ExpiresAt.After(now) || !h.usable() || remote != anyCaller && h.Remote != remote {
				continue
			}
			ts := api.TokenStatus{Scope: sc, ExpiresAt: h.ExpiresAt.UTC(), SingleUse: h.SingleUse, Method: h.Method}
			ts.BoundTo = peer.Describe(h.Bind, h.Minter)
			for _, m := range h.Bind {
				ts.Bind = append(ts.Bind, string(m))
			}
			ts.Details = h.Details != ""
			ts.KeyBound = h.Cnf != nil
			out = append(out, ts)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Scope != out[j].Scope {
			return out[i].Scope < out[j].Scope
		}
		return out[i].ExpiresAt.Before(out[j].ExpiresAt)
	})
	return out
}

// expirySet is a set of ids each remembered until a time, kept in the
// keychain under one kind: consumed single-use tokens, replayed external
// assertions.
type expirySet struct {
	kind    string
	persist *persister

	mu  sync.Mutex
	ids map[string]time.Time
}

func newExpirySet(kind string, p *persister) *expirySet {
	return &expirySet{kind: kind, persist: p, ids: map[string]time.Time{}}
}

// load remembers id as read from the keychain; an expired or malformed
// entry is deleted there instead.
func (e *expirySet) load(id string, exp time.Time, now time.Time) {
	if !exp.After(now) {
		e.persist.del(e.kind, id)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ids[id] = exp
}

// add remembers id until exp and queues the write.
func (e *expirySet) add(id string, exp time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ids[id] = exp
	e.persist.put(e.kind, id, exp)
}

// addNew is add that refuses an id already remembered.
func (e *expirySet) addNew(id string, exp time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, seen := e.ids[id]; seen {
		return false
	}
	e.ids[id] = exp
	e.persist.put(e.kind, id, exp)
	return true
}

func (e *expirySet) has(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.ids[id]
	return ok
}

// sweep forgets the ids whose time has come.
func (e *expirySet) sweep(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, exp := range e.ids {
		if !exp.After(now) {
			delete(e.ids, id)
			e.persist.del(e.kind, id)
		}
	}
}
