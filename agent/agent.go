// Package agent is the core of stepup-agent: it decides whether a scope
// needs step-up, runs verifications (through prompts or the custom-UI
// path), mints, holds, hands out, verifies and consumes elevated tokens,
// enrolls credentials, and keeps it all in the keychain. It serves the
// methods of docs/protocol.md through ipc.Handler.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/ipc"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/prompt"
	"github.com/stepup-agent/stepup-agent/token"
	"go.uber.org/zap"
)

// Version is the agent's version, reported by status.
var Version = "0.1.0-dev"

// ExternalVerifier checks a backend's assertion for
// requestExternalAuthElevatedToken. It returns the assertion's jti and
// the time until which the jti must be remembered (no earlier than the
// last instant the assertion is accepted, leeway included); the agent
// refuses a jti it has seen before and forgets it at that time.
type ExternalVerifier interface {
	Verify(ctx context.Context, assertion string, scopes []string, cfg policy.ExternalJwt) (jti string, exp time.Time, err error)
}

// Config is what New needs.
type Config struct {
	// Store keeps keys, credentials, tokens and counters.
	Store keychain.Store
	// Policy returns the policy in force (it changes on reload).
	Policy func() *policy.Policy
	// PolicyStatus describes the policy for status.
	PolicyStatus func() api.PolicyStatus
	// Prompts returns the prompt selector in force.
	Prompts func() prompt.Selector
	// Methods are the verification methods offered.
	Methods []method.Method
	// External verifies backend assertions; nil disables them.
	External ExternalVerifier
	Audit    *audit.Log
	Log      *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Socket is reported by status.
	Socket string
}

// Agent is the step-up agent. Create it with New.
type Agent struct {
	cfg     Config
	log     *zap.Logger
	now     func() time.Time
	subject string
	signer  *token.Signer
	methods map[string]method.Method
	persist *persister

	rules atomic.Pointer[ruleCache]

	mu          sync.Mutex
	creds       map[string]*method.Credential
	tokens      map[string]*held              // by jti
	byScope     map[string]*held              // the newest live token of each scope
	scoped      map[string]map[*held]struct{} // every live token of each scope
	consumed    map[string]time.Time
	replay      map[string]time.Time
	limits      map[string]*limit
	challenges  map[string]*challenge
	enrollments map[string]*enrollment
	locked      bool                   // manualLock || sessionLock
	manualLock  bool                   // stepupctl lock: lifted by a verification
	sessionLock bool                   // screen lock, sleep: lifted by the session's unlock too
	cancels     map[string][]time.Time // prompt-bombing guard, by client

	methodMu map[string]*sync.Mutex // one Complete per method at a time

	flights  map[string]*flight
	promptCh chan struct{} // one dialog at a time
}

// held is a token the agent holds.
type held struct {
	JTI       string    `json:"jti"`
	Token     string    `json:"token"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
	Method    string    `json:"method"`
}

type ruleCache struct {
	pol   *policy.Policy
	rules sync.Map // scope -> policy.Rule
}

// New loads the agent's state from cfg.Store (creating a signing key on
// first start) and returns the agent.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy == nil {
		def := policy.Default()
		cfg.Policy = func() *policy.Policy { return def }
	}
	if cfg.Prompts == nil {
		cfg.Prompts = func() prompt.Selector { return prompt.None{} }
	}
	if cfg.Store == nil {
		cfg.Store = keychain.NewMemory()
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log, now: cfg.Now,
		methods:     map[string]method.Method{},
		creds:       map[string]*method.Credential{},
		tokens:      map[string]*held{},
		byScope:     map[string]*held{},
		scoped:      map[string]map[*held]struct{}{},
		consumed:    map[string]time.Time{},
		replay:      map[string]time.Time{},
		limits:      map[string]*limit{},
		challenges:  map[string]*challenge{},
		enrollments: map[string]*enrollment{},
		cancels:     map[string][]time.Time{},
		methodMu:    map[string]*sync.Mutex{},
		flights:     map[string]*flight{},
		promptCh:    make(chan struct{}, 1),
	}
	a.subject = "unknown"
	if u, err := user.Current(); err == nil {
		a.subject = u.Username
	}
	for _, m := range cfg.Methods {
		if m == nil {
			continue
		}
		a.methods[m.Name()] = m
		a.methodMu[m.Name()] = &sync.Mutex{}
	}
	a.methodMu[api.ExternalJWT] = &sync.Mutex{}
	a.persist = newPersister(cfg.Store, cfg.Log)
	if err := a.load(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Run does the agent's housekeeping (expiry, writing to the keychain)
// until ctx is done, then flushes pending keychain writes.
func (a *Agent) Run(ctx context.Context) {
	go a.persist.run()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.persist.close()
			return
		case <-t.C:
			a.sweep()
		}
	}
}

// Flush waits until every keychain write queued so far has been tried.
func (a *Agent) Flush() { a.persist.flush() }

func (a *Agent) policy() *policy.Policy { return a.cfg.Policy() }

// rule resolves scope under the policy in force, cached per policy.
func (a *Agent) rule(scope string) policy.Rule {
	pol := a.policy()
	rc := a.rules.Load()
	if rc == nil || rc.pol != pol {
		rc = &ruleCache{pol: pol}
		a.rules.Store(rc)
	}
	if r, ok := rc.rules.Load(scope); ok {
		return r.(policy.Rule)
	}
	r := pol.Resolve(scope)
	rc.rules.Store(scope, r)
	return r
}

// load reads the state from the keychain and drops what has expired.
func (a *Agent) load(ctx context.Context) error {
	st := a.cfg.Store
	now := a.now()
	// The signing key survives restarts.
	keyData, err := st.Get(ctx, keychain.KindKey, "signing")
	var priv ed25519.PrivateKey
	switch {
	case err == nil && len(keyData) == ed25519.SeedSize:
		priv = ed25519.NewKeyFromSeed(keyData)
	case err == nil || errors.Is(err, keychain.ErrNotFound):
		if err == nil {
			a.log.Warn("the stored signing key is malformed; making a new one (tokens minted before are no longer valid)")
		}
		priv, err = token.GenerateKey()
		if err != nil {
			return err
		}
		if err := st.Put(ctx, keychain.KindKey, "signing", priv.Seed()); err != nil {
			a.log.Warn("cannot store the signing key in the keychain; tokens will not survive a restart", zap.Error(err))
		}
	default:
		a.log.Warn("cannot read the signing key from the keychain; using a new key for this run", zap.Error(err))
		if priv, err = token.GenerateKey(); err != nil {
			return err
		}
	}
	if a.signer, err = token.NewSigner(priv); err != nil {
		return err
	}
	if err := a.cfg.Audit.SetKey(priv, a.signer.KID()); err != nil {
		return err
	}

	each := func(kind string, fn func(name string, data []byte)) {
		names, err := st.List(ctx, kind)
		if err != nil {
			a.log.Warn("cannot list keychain items", zap.String("kind", kind), zap.Error(err))
			return
		}
		for _, n := range names {
			data, err := st.Get(ctx, kind, n)
			if err != nil {
				a.log.Warn("cannot read keychain item", zap.String("kind", kind), zap.String("name", n), zap.Error(err))
				continue
			}
			fn(n, data)
		}
	}
	each(keychain.KindCredential, func(name string, data []byte) {
		var c method.Credential
		if json.Unmarshal(data, &c) != nil || c.ID == "" {
			a.log.Warn("skipping a malformed credential in the keychain", zap.String("name", name))
			return
		}
		a.creds[c.ID] = &c
	})
	each(keychain.KindConsumed, func(name string, data []byte) {
		var exp time.Time
		if json.Unmarshal(data, &exp) != nil || !exp.After(now) {
			a.persist.del(keychain.KindConsumed, name)
			return
		}
		a.consumed[name] = exp
	})
	each(keychain.KindReplay, func(name string, data []byte) {
		var exp time.Time
		if json.Unmarshal(data, &exp) != nil || !exp.After(now) {
			a.persist.del(keychain.KindReplay, name)
			return
		}
		a.replay[name] = exp
	})
	each(keychain.KindToken, func(name string, data []byte) {
		var h held
		if json.Unmarshal(data, &h) != nil || !h.ExpiresAt.After(now) || a.consumed[h.JTI].After(now) {
			a.persist.del(keychain.KindToken, name)
			return
		}
		// A token signed by another key (the key was lost) is useless.
		if _, err := a.signer.Verify(h.Token, now); err != nil {
			a.persist.del(keychain.KindToken, name)
			return
		}
		a.addHeld(&h)
	})
	each(keychain.KindLimit, func(name string, data []byte) {
		var l limit
		if json.Unmarshal(data, &l) != nil {
			return
		}
		a.limits[name] = &l
	})
	a.log.Info("state loaded", zap.String("keychain", st.Backend()), zap.Int("credentials", len(a.creds)),
		zap.Int("tokens", len(a.tokens)), zap.String("kid", a.signer.KID()))
	return nil
}

// addHeld records h under its jti and each of its scopes. Callers hold a.mu
// (or are single-threaded, as load is).
func (a *Agent) addHeld(h *held) {
	a.tokens[h.JTI] = h
	for _, s := range h.Scopes {
		if a.scoped[s] == nil {
			a.scoped[s] = map[*held]struct{}{}
		}
		a.scoped[s][h] = struct{}{}
		if old := a.byScope[s]; old == nil || better(h, old) {
			a.byScope[s] = h
		}
	}
}

// better reports whether h should be handed out before old: a multi-use
// token before a single-use one, then the one that lives longer.
func better(h, old *held) bool {
	if h.SingleUse != old.SingleUse {
		return !h.SingleUse
	}
	return h.ExpiresAt.After(old.ExpiresAt)
}

// dropHeld forgets h. Callers hold a.mu.
func (a *Agent) dropHeld(h *held) {
	delete(a.tokens, h.JTI)
	for _, s := range h.Scopes {
		delete(a.scoped[s], h)
		if len(a.scoped[s]) == 0 {
			delete(a.scoped, s)
		}
		if a.byScope[s] == h {
			delete(a.byScope, s)
			// Fall back to another live token of the scope, if any.
			for o := range a.scoped[s] {
				if cur := a.byScope[s]; cur == nil || better(o, cur) {
					a.byScope[s] = o
				}
			}
		}
	}
	a.persist.del(keychain.KindToken, h.JTI)
}

// sweep drops expired tokens, consumed IDs, challenges and enrollments.
func (a *Agent) sweep() {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range a.tokens {
		if !h.ExpiresAt.After(now) {
			a.dropHeld(h)
		}
	}
	for jti, exp := range a.consumed {
		if !exp.After(now) {
			delete(a.consumed, jti)
			a.persist.del(keychain.KindConsumed, jti)
		}
	}
	for k, exp := range a.replay {
		if !exp.After(now) {
			delete(a.replay, k)
			a.persist.del(keychain.KindReplay, k)
		}
	}
	a.dropExpiredOpen(now)
	for k, ts := range a.cancels {
		if len(ts) == 0 || now.Sub(ts[len(ts)-1]) > cancelWindow {
			delete(a.cancels, k)
		}
	}
}

// randomID returns a random identifier with 128 bits of entropy.
func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// who describes a request's client for the audit log.
func who(ctx context.Context) audit.Record {
	r := audit.Record{UID: os.Getuid()}
	if p := ipc.PeerFrom(ctx); p != nil {
		r.PID, r.UID, r.Exe = p.PID, p.UID, p.Exe()
	}
	return r
}

func (a *Agent) audit(ctx context.Context, r audit.Record) {
	base := who(ctx)
	r.PID, r.UID, r.Exe = base.PID, base.UID, base.Exe
	if err := a.cfg.Audit.Write(r); err != nil {
		a.log.Warn("cannot write the audit log", zap.Error(err))
	}
}

func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Data.Reason
	}
	return "error"
}

// clientExe is the executable of the request's client ("" if unknown).
func clientExe(ctx context.Context) string {
	if p := ipc.PeerFrom(ctx); p != nil {
		return p.Exe()
	}
	return ""
}

func clientDesc(ctx context.Context) string {
	if p := ipc.PeerFrom(ctx); p != nil {
		return p.String()
	}
	return "a local client"
}

// checkClient refuses a client that the scope's clients list leaves out.
func (a *Agent) checkClient(ctx context.Context, r policy.Rule) error {
	if len(r.Clients) == 0 {
		return nil
	}
	exe := clientExe(ctx)
	if exe == "" || !r.AllowsClient(exe) {
		return api.Errorf(api.CodeForbidden, "%s may not use scope %s", orUnknown(exe), r.Scope).
			WithHint("the policy's clients list for this scope names the executables allowed to use it")
	}
	return nil
}

func orUnknown(exe string) string {
	if exe == "" {
		return "this client (executable unknown)"
	}
	return exe
}

func invalidParams(format string, args ...any) *api.Error {
	return api.Errorf(api.CodeInvalidParams, format, args...)
}

// decode unmarshals params strictly enough to catch mistakes.
func decode(params json.RawMessage, v any) error {
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage("{}")
	}
	if err := json.Unmarshal(params, v); err != nil {
		return invalidParams("invalid params: %v", shortJSONError(err))
	}
	return nil
}

func shortJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s must be a %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("params must be an object, not %s", te.Value)
	}
	return "params must be a JSON object"
}

func jsonKind(k string) string {
	switch k {
	case "slice":
		return "list"
	case "struct", "map":
		return "object"
	case "int", "int64", "uint64", "float64":
		return "number"
	case "bool":
		return "boolean"
	}
	return k
}
