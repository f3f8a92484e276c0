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
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/audit/auditlog"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/peer"
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
	Audit    *auditlog.Log
	Log      *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Socket is reported by status.
	Socket string
}

// Agent is the step-up agent. Create it with New.
//
// Its state lives in small owners, each with its own lock: the tokens
// (tokenStore), the replayed external assertions (expirySet), the
// credentials (credSet), the failure limits and cancel cool-downs
// (limiter), the open verifications and enrollments (openStore), the
// shared prompts (flightGroup). The Agent's own mutex guards only the lock
// state and the spans that must not see it change between a check and a
// mint.
type Agent struct {
	// scopeNames interns the scopes of {"scope":"NAME"} params
	// (handle.go).
	scopeNames internSet

	cfg     Config
	log     *zap.Logger
	now     func() time.Time
	subject string
	signer  *token.Signer
	methods *methodSet
	persist *persister

	rules atomic.Pointer[ruleCache]

	tokens      *tokenStore
	replay      *expirySet
	creds       *credSet
	limits      *limiter
	challenges  *openStore[*challenge]
	enrollments *openStore[*enrollment]
	flights     *flightGroup
	promptCh    chan struct{}       // one dialog at a time
	dpop        *token.DPoPVerifier // verifyToken's DPoP proofs and their jti cache

	mu sync.Mutex
	// locked is manualLock || sessionLock, written under mu; an atomic so
	// that Locked, which isStepUpRequired calls on every request, reads
	// it without mu.
	locked      atomic.Bool
	manualLock  bool // stepupctl lock: lifted by a verification
	sessionLock bool // screen lock, sleep: lifted by the session's unlock too
}

// ruleCache holds the rules of the scopes asked about under one policy.
// It is bounded: once a client asking about ever new scope names has
// filled it to maxCachedRules, the agent starts a new one, so memory does
// not grow with the names asked about. Reads take no lock.
type ruleCache struct {
	pol    *policy.Policy
	rules  sync.Map // scope -> policy.Rule
	offers sync.Map // scope -> *offer (offer.go), for cached rules only
	n      atomic.Int64
}

// maxCachedRules bounds the rule cache. A policy names far fewer scopes;
// past it the cache starts over and fills again with the scopes in use.
const maxCachedRules = 1024

func (rc *ruleCache) get(scope string) (policy.Rule, bool) {
	if r, ok := rc.rules.Load(scope); ok {
		return r.(policy.Rule), true
	}
	return policy.Rule{}, false
}

// put caches r and reports whether the cache still has room.
func (rc *ruleCache) put(scope string, r policy.Rule) bool {
	if _, loaded := rc.rules.LoadOrStore(scope, r); !loaded {
		return rc.n.Add(1) < maxCachedRules
	}
	return true
}

func (rc *ruleCache) len() int { return int(rc.n.Load()) }

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
		methods:     newMethodSet(cfg.Methods),
		persist:     newPersister(cfg.Store, cfg.Log),
		challenges:  newOpenStore[*challenge]("verifications", challengeTTL, maxOpen, maxOpenPerClient, openReserve),
		enrollments: newOpenStore[*enrollment]("enrollments", enrollTTL, maxOpen, maxOpenPerClient, 0),
		flights:     newFlightGroup(),
		promptCh:    make(chan struct{}, 1),
		dpop:        token.NewDPoPVerifier(0),
	}
	a.tokens = newTokenStore(a.persist)
	a.replay = newExpirySet(keychain.KindReplay, a.persist)
	a.creds = newCredSet(a.persist)
	a.limits = newLimiter(cfg.Now, cfg.Policy, a.persist)
	a.limits.lockoutEnded = func(m string, until time.Time) {
		a.audit(context.Background(), audit.Record{Event: audit.EventLockoutEnd, Method: m, Result: "ok", Detail: "locked out until " + until.UTC().Format(time.RFC3339)})
	}
	a.limits.hasRecovery = func() bool { return a.usable(api.RecoveryCode) }
	a.subject = "unknown"
	if u, err := user.Current(); err == nil {
		a.subject = u.Username
	}
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

// rule resolves scope under the policy in force, cached per policy. Only
// a valid scope name is cached (callers check names first; an invalid
// one is resolved, never kept), and the cache is bounded.
func (a *Agent) rule(scope string) policy.Rule {
	pol := a.policy()
	rc := a.rules.Load()
	if rc == nil || rc.pol != pol {
		rc = &ruleCache{pol: pol}
		a.rules.Store(rc)
	}
	if r, ok := rc.get(scope); ok {
		return r
	}
	r := pol.Resolve(scope)
	if policy.CheckScope(scope) == nil && !rc.put(scope, r) {
		// Full: start over (a racing put may land in the old one,
		// which is then dropped with it).
		a.rules.CompareAndSwap(rc, &ruleCache{pol: pol})
	}
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
		if err := st.Put(ctx, keychain.KindKey, "signing", priv.Seed()); errors.Is(err, keychain.ErrNotStored) {
			// Every token minted with a key the keychain cannot keep
			// would be lost at the next start.
			return fmt.Errorf("cannot store the new token-signing key: %w (free disk space where the keychain lives, then start the agent again)", err)
		} else if err != nil {
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
		a.creds.load(&c)
	})
	for _, set := range []*expirySet{a.tokens.consumed, a.replay} {
		each(set.kind, func(name string, data []byte) {
			var exp time.Time
			_ = json.Unmarshal(data, &exp) // malformed: zero, dropped as expired
			set.load(name, exp, now)
		})
	}
	each(keychain.KindToken, func(name string, data []byte) {
		var h held
		// A token without a caller was persisted before binding
		// existed: no one may be handed it, so it is dropped.
		if json.Unmarshal(data, &h) != nil || !h.ExpiresAt.After(now) || a.tokens.wasConsumed(h.JTI) || !h.Minter.Known() {
			a.persist.del(keychain.KindToken, name)
			return
		}
		// A token signed by another key (the key was lost) is useless.
		// The item must be the token it names: its jti in the signed
		// claims, filed under that jti, and held once. A copy under
		// another name (only a writer of the keychain makes one) would
		// stay in the scope index after reset and lock revoke the
		// token by its jti.
		c, err := a.signer.Verify(h.Token, now)
		if err != nil || c.ID != h.JTI || name != h.JTI || !a.tokens.load(&h) {
			a.log.Warn("dropping a token from the keychain that is not the token it names, or held already", zap.String("name", name))
			a.persist.del(keychain.KindToken, name)
			return
		}
	})
	each(keychain.KindLimit, func(name string, data []byte) {
		var l limit
		if json.Unmarshal(data, &l) != nil {
			return
		}
		a.limits.load(name, &l)
	})
	// The token store holds the tokens from now on: the keychain layer
	// need not keep a second copy of each.
	if r, ok := st.(keychain.Releaser); ok {
		r.Release(keychain.KindToken)
	}
	// Loading parsed every item: give the garbage back to the system now
	// rather than keep it resident until the scavenger gets to it.
	debug.FreeOSMemory()
	a.log.Info("state loaded", zap.String("keychain", st.Backend()), zap.Int("credentials", a.creds.count()),
		zap.Int("tokens", a.tokens.count()), zap.String("kid", a.signer.KID()))
	return nil
}

// sweep drops expired tokens, consumed and replayed ids, open
// verifications and enrollments, and stale cancel counts.
func (a *Agent) sweep() {
	now := a.now()
	a.tokens.sweep(now)
	a.replay.sweep(now)
	a.challenges.sweep(now)
	a.enrollments.sweep(now)
	a.limits.sweep(now)
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
	if p := peer.FromContext(ctx); p != nil {
		r.PID, r.UID, r.Exe = p.PID, p.UID, p.Exe()
	}
	return r
}

func (a *Agent) audit(ctx context.Context, r audit.Record) {
	base := who(ctx)
	r.PID, r.UID, r.Exe = base.PID, base.UID, base.Exe
	// Every record names its caller as binding identifies it and its
	// prompts name it (the script of an interpreter too); exe keeps the
	// executable's full path.
	if p := peer.FromContext(ctx); r.Caller == "" && p.Known() {
		r.Caller = p.Display()
	}
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
	if p := peer.FromContext(ctx); p != nil {
		return p.Exe()
	}
	return ""
}

func clientDesc(ctx context.Context) string {
	if p := peer.FromContext(ctx); p != nil {
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
