package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/prompt"
	"github.com/stepup-agent/stepup-agent/remote"
)

// protoMethod is one protocol method (docs/protocol.md).
type protoMethod struct {
	// call decodes the params and runs the method.
	call func(a *Agent, ctx context.Context, params json.RawMessage) (any, error)
	// inline: the method answers from memory without waiting on a
	// person, a program or the network, so the connection's reader may
	// serve it in order, without a goroutine. Every other method runs
	// concurrently, where a client hanging up is seen.
	inline bool
	// changes: the method may change what the keychain keeps; its answer
	// waits until those writes are done (docs/keychain.md, "Crash
	// safety").
	changes bool
	// remote is what a caller through the remote socket may do with the
	// method (agent/remote.go, docs/remote.md). The zero value refuses
	// it: a new method is local only until its row says otherwise.
	remote remoteUse
	// route is a prompt method's family of verification methods.
	route route
	// does says what the method does, for a remote caller's refusal
	// ("a remote caller may not enroll credentials").
	does string
}

// remoteUse is how a remote caller may use a protocol method.
type remoteUse int

const (
	remoteRefuse remoteUse = iota // never through the remote socket
	remoteServe                   // served as asked, within the policy's remote scopes
	remoteStart                   // startVerification: the policy's remote methods, never an unlock
	remotePrompt                  // a prompt: the policy's remote methods; it goes where the local ssh runs
	remoteOwn                     // resetState: only the remote caller's own tokens
)

// protocol is the table of protocol methods. A new protocol method is one
// line here, its params and result types in api/, and its Agent method.
var protocol = map[string]protoMethod{
	api.MethodIsStepUpRequired:     {call: scoped((*Agent).isStepUpRequired), inline: true, remote: remoteServe},
	api.MethodPromptStepUpAuth:     {call: typed(prompter(routeAuto)), changes: true, remote: remotePrompt, route: routeAuto},
	api.MethodPromptMfa:            {call: typed(prompter(routeMFA)), changes: true, remote: remotePrompt, route: routeMFA},
	api.MethodPromptReauthenticate: {call: typed(prompter(routeReauth)), changes: true, remote: remotePrompt, route: routeReauth},
	api.MethodUnlock:               {call: typed((*Agent).UnlockPrompt), changes: true, does: "unlock the agent"},
	api.MethodStartVerification:    {call: typed((*Agent).StartVerification), changes: true, remote: remoteStart},
	api.MethodCompleteVerification: {call: typed((*Agent).CompleteVerification), changes: true, remote: remoteServe},
	api.MethodGetToken:             {call: scoped((*Agent).getToken), inline: true, remote: remoteServe},
	api.MethodVerifyToken:          {call: typed((*Agent).VerifyToken), inline: true, changes: true, remote: remoteServe},
	api.MethodResetState:           {call: typed((*Agent).resetState), inline: true, changes: true, remote: remoteOwn},
	api.MethodEnrollStart:          {call: typed((*Agent).EnrollStart), changes: true, does: "enroll credentials"},
	api.MethodEnrollFinish:         {call: typed((*Agent).EnrollFinish), changes: true, does: "enroll credentials"},
	api.MethodListCredentials:      {call: typed((*Agent).listCredentials), inline: true, does: "list credentials"},
	api.MethodRemoveCredential:     {call: typed((*Agent).removeCredential), inline: true, changes: true, does: "remove credentials"},
	api.MethodStatus:               {call: typed((*Agent).status), inline: true, remote: remoteServe},
	api.MethodJWKS:                 {call: typed((*Agent).jwks), inline: true, remote: remoteServe},
	api.MethodRequestExternalAuth:  {call: typed((*Agent).ExternalAuth), changes: true, does: "step up with a backend's assertion"},
	api.MethodLock:                 {call: typed((*Agent).lockMethod), inline: true, changes: true, does: "lock the agent"},
	api.MethodAuditHead:            {call: typed((*Agent).auditHead), inline: true, does: "read the audit log's head"},
}

// typed turns a handler of typed params into one of raw params: the one
// decoder of every method's params.
func typed[P, R any](fn func(a *Agent, ctx context.Context, p *P) (R, error)) func(*Agent, context.Context, json.RawMessage) (any, error) {
	return func(a *Agent, ctx context.Context, params json.RawMessage) (any, error) {
		p := new(P)
		if err := decode(params, p); err != nil {
			return nil, err
		}
		if k, ok := any(p).(interface{ KeepRaw(json.RawMessage) }); ok {
			k.KeepRaw(params)
		}
		return fn(a, ctx, p)
	}
}

// scoped is typed for the methods whose params are api.ScopeParams, the
// hot path: params that are exactly {"scope":"NAME"}, NAME printable
// ASCII without escapes, are read without encoding/json (which decodes
// them to the same value); any other params go through typed.
func scoped[R any](fn func(a *Agent, ctx context.Context, p *api.ScopeParams) (R, error)) func(*Agent, context.Context, json.RawMessage) (any, error) {
	slow := typed(fn)
	return func(a *Agent, ctx context.Context, params json.RawMessage) (any, error) {
		if scope, ok := scopeBytes(params); ok {
			return fn(a, ctx, &api.ScopeParams{Scope: a.scopeNames.get(scope)})
		}
		return slow(a, ctx, params)
	}
}

// scopeOnly reads params of the one shape {"scope":"NAME"} (JSON
// whitespace allowed between tokens), where NAME holds only printable
// ASCII other than the quote and the backslash. For anything else it reports false.
func scopeOnly(b []byte) (string, bool) {
	s, ok := scopeBytes(b)
	return string(s), ok
}

// scopeBytes is scopeOnly without the string: NAME within b.
func scopeBytes(b []byte) ([]byte, bool) {
	const key = `"scope"`
	i := jsonSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = jsonSpace(b, i+1)
	if len(b)-i < len(key) || string(b[i:i+len(key)]) != key {
		return nil, false
	}
	i = jsonSpace(b, i+len(key))
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = jsonSpace(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	start := i + 1
	j := start
	for ; j < len(b) && b[j] != '"'; j++ {
		if c := b[j]; c < 0x20 || c >= 0x7f || c == '\\' {
			return nil, false
		}
	}
	if j >= len(b) {
		return nil, false
	}
	k := jsonSpace(b, j+1)
	if k >= len(b) || b[k] != '}' || jsonSpace(b, k+1) != len(b) {
		return nil, false
	}
	return b[start:j], true
}

// jsonSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func jsonSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func prompter(rt route) func(a *Agent, ctx context.Context, p *api.PromptParams) (*api.TokenResult, error) {
	return func(a *Agent, ctx context.Context, p *api.PromptParams) (*api.TokenResult, error) {
		return a.Prompt(ctx, rt, p)
	}
}

// noParams is the params of methods that take none (anything is ignored).
type noParams struct{}

// The adapters below give the table's handlers the one shape typed wants.

func (a *Agent) isStepUpRequired(ctx context.Context, p *api.ScopeParams) (*checkAnswer, error) {
	c := checkAnswers.Get().(*checkAnswer)
	if err := a.checkInto(ctx, p, &c.StepUpRequired, &c.exp); err != nil {
		c.Release()
		return nil, err
	}
	return c, nil
}

func (a *Agent) getToken(ctx context.Context, p *api.ScopeParams) (*tokenAnswer, error) {
	t := tokenAnswers.Get().(*tokenAnswer)
	if err := a.getTokenInto(ctx, p, &t.GetTokenResult); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

func (a *Agent) resetState(ctx context.Context, p *api.ResetParams) (*api.ResetResult, error) {
	return a.ResetState(ctx, p.Scopes), nil
}

func (a *Agent) listCredentials(context.Context, *noParams) (*api.ListCredentialsResult, error) {
	return a.ListCredentials(), nil
}

func (a *Agent) removeCredential(ctx context.Context, p *api.RemoveCredentialParams) (*api.RemoveCredentialResult, error) {
	return a.RemoveCredential(ctx, p.CredentialID)
}

func (a *Agent) status(context.Context, *noParams) (*api.Status, error) { return a.Status(), nil }

func (a *Agent) auditHead(context.Context, *noParams) (*api.AuditHead, error) {
	return a.AuditHead(), nil
}

func (a *Agent) jwks(context.Context, *noParams) (any, error) { return a.signer.JWKS(), nil }

func (a *Agent) lockMethod(ctx context.Context, _ *noParams) (api.LockResult, error) {
	a.Lock(ctx, "stepupctl lock")
	return api.LockResult{Locked: true}, nil
}

// Handle serves one request (ipc.Handler).
func (a *Agent) Handle(ctx context.Context, m string, params json.RawMessage) (any, error) {
	pm, ok := protocol[m]
	if !ok {
		return nil, api.Errorf(api.CodeMethodNotFound, "unknown method %q", m).
			WithHint("docs/protocol.md lists the methods; `stepupctl --help` the CLI verbs")
	}
	if rc := remote.FromContext(ctx); rc != nil {
		return a.handleRemote(ctx, rc, m, pm, params) // remote.go
	}
	if !pm.changes {
		res, err := pm.call(a, ctx, params)
		return res, wireError(err)
	}
	from, start := a.persist.mark(), time.Now()
	g := &grants{}
	ctx = context.WithValue(ctx, grantsKey{}, g)
	res, err := pm.call(a, ctx, params)
	// What this request changed is in the keychain before the client
	// hears of it (docs/keychain.md, "Crash safety").
	res, err = a.settle(m, from, start, g, res, err)
	return res, wireError(err)
}

// settle waits for the keychain writes of a request that changes state
// (queued since from) and refuses the request when the keychain refused
// one of them: what the agent answers as done survives a restart. A
// request that failed anyway keeps its own error. A token the request
// minted whose write is not stored by the deadline is abandoned and the
// request refused: the client is never given a token the agent does
// not hold. Any other change not stored by then (it stays in force in
// memory) is owed: status says the keychain is not available until it
// is stored.
func (a *Agent) settle(m string, from uint64, start time.Time, g *grants, res any, err error) (any, error) {
	deadline := settleDeadline(start, time.Now())
	target := a.persist.mark()
	perr := a.persist.barrier(from, time.Until(deadline))
	if perr == nil && target > from {
		tried := a.persist.tried(target) // before the store's state: see owes
		flushed := a.waitFlushed(deadline)
		// A refusal may have come after the barrier returned.
		if perr = a.persist.failedIn(from, target); perr == nil && (!tried || !flushed) {
			a.persist.owe(target)
		}
	}
	if perr == nil && err == nil && g.abandonUnstored(a.tokens) {
		perr = fmt.Errorf("%w: not stored within %s", keychain.ErrUnavailable, persistWait)
	}
	if perr == nil || err != nil {
		return res, err
	}
	return nil, notStoredError(m, perr)
}

// grants are the tokens a request minted (agent/tokens.go's mint adds
// them), for settle.
type grants struct {
	mu sync.Mutex
	hs []*held
}

type grantsKey struct{}

// grantsOf returns the request's grants (nil outside a request that
// changes state; add on nil does nothing).
func grantsOf(ctx context.Context) *grants {
	g, _ := ctx.Value(grantsKey{}).(*grants)
	return g
}

func (g *grants) add(h *held) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.hs = append(g.hs, h)
	g.mu.Unlock()
}

// abandonUnstored abandons the minted tokens not stored yet and reports
// whether there was one.
func (g *grants) abandonUnstored(s *tokenStore) bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	found := false
	for _, h := range g.hs {
		if s.abandon(h) {
			found = true
		}
	}
	return found
}

// flushWaiter is the keychain store's WaitFlushed (keychain/resilient.go).
type flushWaiter interface {
	WaitFlushed(ctx context.Context) bool
}

// waitFlushed waits, until deadline, while a keychain that answers again
// writes what changed while it did not: this request's writes are among
// those changes, and it answers once they are stored. A keychain that is
// not answering is not waited for (the change stays in memory, and
// status says it is not written yet).
// It reports whether the keychain holds every change tried so far.
func (a *Agent) waitFlushed(deadline time.Time) bool {
	fw, ok := a.cfg.Store.(flushWaiter)
	if !ok {
		return storeAvailable(a.cfg.Store)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return fw.WaitFlushed(ctx)
}

// storeAvailable reports whether st answers and holds every change it
// took (a store without Available always does).
func storeAvailable(st keychain.Store) bool {
	if av, ok := st.(interface{ Available() bool }); ok {
		return av.Available()
	}
	return true
}

// notStoredError is the 4011 of a request whose writes the keychain
// refused: what was not done, why, and what to do.
func notStoredError(m string, err error) *api.Error {
	what := "the change was not made"
	switch m {
	case api.MethodPromptStepUpAuth, api.MethodPromptMfa, api.MethodPromptReauthenticate,
		api.MethodCompleteVerification, api.MethodRequestExternalAuth:
		what = "no token was issued"
	case api.MethodVerifyToken:
		what = "the token was not accepted, and stays unusable"
	case api.MethodEnrollFinish:
		what = "the credential was not enrolled"
	case api.MethodRemoveCredential:
		what = "the credential is removed, but the removal is not stored yet"
	case api.MethodResetState, api.MethodLock:
		what = "the tokens are revoked, but the revocation is not stored yet"
	case api.MethodUnlock:
		what = "the agent is unlocked, but a change is not stored yet"
	}
	hint := "check the keychain: `stepupctl status` shows its warning and the agent's log says why; then try again"
	if keychain.NoSpace(err) {
		hint = "free disk space on the filesystem that holds the keychain (the file backend: $XDG_STATE_HOME/stepup, or the quota), then try again"
	}
	return api.Errorf(api.CodeKeychainFailed, "the keychain could not store this request's change (%s): %s", cause(err), what).
		WithHint("%s", hint)
}

// cause is what the system said ("no space left on device"), without
// the path of a temporary file; err's text when it says nothing else.
func cause(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// persistWait bounds how long an answer waits for its keychain writes.
const persistWait = 5 * time.Second

// settleDeadline is when a request that started at start, and whose
// handler returned at end, stops waiting for its writes: persistWait
// after the request arrived, less a margin for the answer to go out, so
// that the client hears within the bound docs/keychain.md states. A
// handler that took longer than a second waited on a person or the
// network, not on the keychain: its wait counts from its end.
func settleDeadline(start, end time.Time) time.Time {
	const answerMargin = 100 * time.Millisecond
	if end.Sub(start) > time.Second {
		start = end
	}
	return start.Add(persistWait - answerMargin)
}

// Immediate reports the methods the server may answer in the goroutine
// that accepted the connection (ipc.Immediate): isStepUpRequired only,
// which answers from memory, writes no audit record and waits on
// nothing. (getToken audits a refusal, with an fsync; the methods marked
// changes wait for the keychain.)
func (a *Agent) Immediate(m string) bool { return m == api.MethodIsStepUpRequired }

// Blocking reports the methods that may wait on a person, a program or the
// network (ipc.Handler): every method the table does not mark inline.
func (a *Agent) Blocking(m string) bool {
	pm, ok := protocol[m]
	return ok && !pm.inline
}

// wireError maps the errors of prompts, methods and contexts onto the
// protocol's codes. *api.Error passes through.
func wireError(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	var np *prompt.NoPrompterError
	switch {
	case errors.As(err, &np):
		return api.Errorf(api.CodeNoPrompter, "no way to show a prompt for this request").WithHint("%s", np.Hint)
	case errors.Is(err, prompt.ErrNoPrompter):
		return api.Errorf(api.CodeNoPrompter, "no way to show a prompt for this request").
			WithHint("run the client in a terminal or a graphical session, or start the agent with --prompter pinentry|zenity|terminal")
	case errors.Is(err, prompt.ErrCancelled):
		return api.Errorf(api.CodeCancelled, "the user dismissed the prompt")
	case errors.Is(err, prompt.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.CodeTimeout, "nobody answered the prompt in time").
			WithHint("answer sooner, or raise prompt.timeout in the policy or timeoutSeconds in the request")
	case errors.Is(err, context.Canceled):
		return api.Errorf(api.CodeCancelled, "the request was cancelled (the client hung up or the agent is stopping)")
	case errors.Is(err, method.ErrVerificationFailed):
		return api.Errorf(api.CodeVerificationFailed, "%s", err.Error())
	}
	return err
}

// internSet hands out one string per scope name read on the hot path,
// so that a scope asked for again is not allocated again. Only valid
// scope names are kept (at most policy.MaxScopeLen bytes: a 64 KiB line
// is not), and at most maxInterned of them: past that a new name is
// allocated as before, so the set holds at most 256 KiB and a client
// cycling through names cannot evict the ones in use.
type internSet struct {
	mu sync.RWMutex
	m  map[string]string
}

const maxInterned = 1024

func (s *internSet) get(b []byte) string {
	s.mu.RLock()
	v, ok := s.m[string(b)]
	full := len(s.m) >= maxInterned
	s.mu.RUnlock()
	if ok {
		return v
	}
	v = string(b)
	if full || policy.CheckScope(v) != nil {
		return v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]string)
	}
	if len(s.m) < maxInterned {
		s.m[v] = v
	}
	return v
}
