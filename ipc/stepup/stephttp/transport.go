package stephttp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/token"
)

// DefaultHeader is the request header that carries the elevated token
// unless Transport.Header or Options.Header say otherwise. It is not
// Authorization because an application usually sends its own session
// credential there; the elevated token rides next to it, as in
//
//	curl -H "Authorization: Bearer $SESSION" -H "X-Elevated-Token: $(stepupctl token wallet:sign)" ...
//
// Set the header to "Authorization" to send and read "Bearer TOKEN".
const DefaultHeader = "X-Elevated-Token"

// Transport is an http.RoundTripper that attaches elevated tokens: for
// each request that Scope maps to a scope it asks the agent for a token
// (getToken), steps up when the agent holds none, and sets the header.
// When a server answers 401 with an RFC 9470 challenge
// (error="insufficient_user_authentication"), it steps up for the scopes
// and max_age the challenge names and retries the request once.
//
// A single-use token is attached to at most one request (by any Transport
// of the process): the next request for that scope steps up again,
// whether or not the server consumed it.
//
// The zero Transport works: it talks to the agent at $STEPUP_AUTH_SOCK,
// attaches no token until a server asks for one, and prompts the user
// with promptStepUpAuth. A Transport is safe for concurrent use; step-ups
// are made one at a time.
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Client is the agent; nil means a zero stepup.Client.
	Client *stepup.Client
	// Scope returns the scope a request needs, or "" for none (the server
	// may still ask for one with a challenge). Nil means none.
	Scope func(*http.Request) string
	// Header carries the token; empty means DefaultHeader.
	// "Authorization" sends "Bearer TOKEN".
	Header string
	// StepUp verifies the user for scopes and returns the new token; nil
	// means Client.PromptStepUpAuth with Reason. An application with its
	// own UI plugs in startVerification/completeVerification here.
	StepUp func(ctx context.Context, scopes []string) (*stepup.TokenResult, error)
	// Reason is shown in the agent's prompt; nil means "METHOD HOST PATH".
	Reason func(*http.Request) string
	// Details returns the authorization details (RFC 9396) of the action
	// a request performs, or nil: the token is asked for, stepped up and
	// shown in the prompt with them, and the server refuses a token
	// approved for anything else.
	Details func(*http.Request) any
	// DPoP binds the tokens to this process's key (made once per process,
	// in memory, never written anywhere) and sends a DPoP proof (RFC
	// 9449) with each request. A server's DPoP challenge turns it on for
	// the retry even when false.
	DPoP bool
	// StepUpFor, when set, replaces StepUp with the whole prompt: scopes,
	// details, key (Cnf) and the route asked for by acr_values.
	StepUpFor func(ctx context.Context, method string, o stepup.PromptOptions) (*stepup.TokenResult, error)

	once   sync.Once
	sem    chan struct{}
	client *stepup.Client
}

// processKey is this process's DPoP key, made on first use.
var processKey = sync.OnceValues(token.NewDPoPKey)

// ProcessKey returns this process's DPoP key: the one every Transport
// with DPoP binds its tokens to.
func ProcessKey() (*token.DPoPKey, error) { return processKey() }

// attachedOnce remembers the single-use tokens any Transport of this
// process attached (jti -> when to forget it), so none is sent twice.
var attachedOnce = struct {
	sync.Mutex
	m map[string]time.Time
}{m: map[string]time.Time{}}

// StepUpError is the error of a request whose step-up failed. errors.Is
// sees through it to the agent's error: errors.Is(err, stepup.ErrCancelled)
// when the user dismissed the prompt.
type StepUpError struct {
	Scopes []string
	// Challenge is the server's challenge that asked for the step-up, or
	// nil when the Transport stepped up on its own.
	Challenge *Challenge
	Err       error
}

func (e *StepUpError) Error() string {
	return fmt.Sprintf("step-up for %s: %v", strings.Join(e.Scopes, " "), e.Err)
}
func (e *StepUpError) Unwrap() error { return e.Err }

func (t *Transport) init() {
	t.once.Do(func() {
		t.sem = make(chan struct{}, 1)
		t.client = t.Client
		if t.client == nil {
			t.client = &stepup.Client{}
		}
	})
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) header() string {
	if t.Header == "" {
		return DefaultHeader
	}
	return t.Header
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.init()
	ctx := req.Context()
	var scopes []string
	if t.Scope != nil {
		if s := t.Scope(req); s != "" {
			scopes = []string{s}
		}
	}
	// A replayable body is read from GetBody on the retry; one without
	// GetBody can be sent once only.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil

	var details any
	if t.Details != nil {
		details = t.Details(req)
	}
	first, sent := req, ""
	if len(scopes) > 0 {
		key, err := t.key(t.DPoP)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		tok, err := t.token(ctx, req, scopes, nil, "", details, key)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		if first, err = t.withToken(req, tok, key); err != nil {
			closeBody(req)
			return nil, err
		}
		sent = tok
	}
	resp, err := t.base().RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	ch := ParseChallenge(resp.Header)
	if !ch.StepUpRequested() || !replayable {
		return resp, nil
	}
	want := ch.Scopes
	if len(want) == 0 {
		want = scopes
	}
	if len(want) == 0 {
		return resp, nil
	}
	key, err := t.key(t.DPoP || ch.DPoP())
	if err != nil {
		drain(resp)
		return nil, err
	}
	tok, err := t.token(ctx, req, want, ch, sent, details, key)
	if err != nil {
		drain(resp)
		return nil, err
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			drain(resp)
			return nil, fmt.Errorf("stephttp: replaying the request body: %w", err)
		}
		retry.Body = body
	}
	drain(resp)
	second, err := t.withToken(retry, tok, key)
	if err != nil {
		closeBody(retry)
		return nil, err
	}
	return t.base().RoundTrip(second)
}

// key returns the process key when on, else nil.
func (t *Transport) key(on bool) (*token.DPoPKey, error) {
	if !on {
		return nil, nil
	}
	k, err := processKey()
	if err != nil {
		return nil, fmt.Errorf("stephttp: making the DPoP key: %w", err)
	}
	return k, nil
}

func (t *Transport) withToken(req *http.Request, tok string, key *token.DPoPKey) (*http.Request, error) {
	r := req.Clone(req.Context()) // shares req.Body
	scheme := "Bearer "
	if key != nil {
		proof, err := key.Proof(req.Method, req.URL.String(), tok, time.Now())
		if err != nil {
			return nil, fmt.Errorf("stephttp: making a DPoP proof: %w", err)
		}
		r.Header.Set("DPoP", proof)
		scheme = "DPoP "
	}
	if strings.EqualFold(t.header(), "Authorization") {
		r.Header.Set("Authorization", scheme+tok)
	} else {
		r.Header.Set(t.header(), tok)
	}
	return r, nil
}

// token returns a token for scopes that may be attached now: the agent's
// held one when it covers every scope, is fresh enough for the challenge's
// max_age and, if single-use, was never attached; otherwise a new one from
// a step-up. refused is the token the server just answered with ch; it
// is not attached again.
func (t *Transport) token(ctx context.Context, req *http.Request, scopes []string, ch *Challenge, refused string, details any, key *token.DPoPKey) (string, error) {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-t.sem }()

	var cnf *api.Cnf
	if key != nil {
		cnf = key.Cnf()
	}
	held, err := t.client.GetTokenFor(ctx, stepup.Query{Scope: scopes[0], AuthorizationDetails: details, Cnf: cnf})
	switch {
	case err == nil:
		c := peekClaims(held.Token)
		if c != nil && t.usable(c, scopes, ch) && c.Cnf.Same(cnf) && (refused == "" || held.Token != refused) {
			t.markUsed(c)
			return held.Token, nil
		}
	case errors.Is(err, stepup.ErrTokenInvalid):
		// None held: step up.
	default:
		return "", &StepUpError{Scopes: scopes, Challenge: ch, Err: err}
	}

	res, err := t.stepUp(ctx, req, scopes, ch, details, cnf)
	if err != nil {
		return "", &StepUpError{Scopes: scopes, Challenge: ch, Err: err}
	}
	c := peekClaims(res.Token)
	if c == nil || !covers(c, scopes) {
		return "", &StepUpError{Scopes: scopes, Challenge: ch, Err: errors.New("the agent returned a token that does not carry the scopes")}
	}
	t.markUsed(c)
	return res.Token, nil
}

func (t *Transport) stepUp(ctx context.Context, req *http.Request, scopes []string, ch *Challenge, details any, cnf *api.Cnf) (*stepup.TokenResult, error) {
	reason := req.Method + " " + req.URL.Host + req.URL.Path
	if t.Reason != nil {
		reason = t.Reason(req)
	}
	o := stepup.PromptOptions{Scopes: scopes, Reason: reason, AuthorizationDetails: details, Cnf: cnf}
	method := routeFor(ch)
	switch {
	case t.StepUpFor != nil:
		return t.StepUpFor(ctx, method, o)
	case t.StepUp != nil && details == nil && cnf == nil:
		return t.StepUp(ctx, scopes)
	case method == api.MethodPromptMfa:
		return t.client.PromptMfa(ctx, o)
	case method == api.MethodPromptReauthenticate:
		return t.client.PromptReauthenticate(ctx, o)
	}
	return t.client.PromptStepUpAuth(ctx, o)
}

// routeFor maps a challenge's acr_values to the prompt method: only mfa
// asks for promptMfa, only reauth for promptReauthenticate; anything
// else (or none) lets the agent route.
func routeFor(ch *Challenge) string {
	if ch == nil || len(ch.ACRValues) == 0 {
		return api.MethodPromptStepUpAuth
	}
	mfa, reauth := false, false
	for _, a := range ch.ACRValues {
		switch a {
		case api.ACRMFA:
			mfa = true
		case api.ACRReauth:
			reauth = true
		default:
			return api.MethodPromptStepUpAuth
		}
	}
	switch {
	case mfa && !reauth:
		return api.MethodPromptMfa
	case reauth && !mfa:
		return api.MethodPromptReauthenticate
	}
	return api.MethodPromptStepUpAuth
}

// usable reports whether a held token may be attached for scopes.
func (t *Transport) usable(c *tokenClaims, scopes []string, ch *Challenge) bool {
	if !covers(c, scopes) {
		return false
	}
	if ch != nil && ch.HasMaxAge && time.Since(time.Unix(c.AuthTime, 0)) > ch.MaxAge {
		return false
	}
	if ch != nil && len(ch.ACRValues) > 0 && !slices.Contains(ch.ACRValues, c.ACR) {
		return false
	}
	if c.SingleUse {
		attachedOnce.Lock()
		_, used := attachedOnce.m[c.ID]
		attachedOnce.Unlock()
		if used {
			return false
		}
	}
	return true
}

// markUsed remembers a single-use token as attached, so it never is again.
func (t *Transport) markUsed(c *tokenClaims) {
	if !c.SingleUse {
		return
	}
	attachedOnce.Lock()
	defer attachedOnce.Unlock()
	now := time.Now()
	for id, exp := range attachedOnce.m {
		if now.After(exp) {
			delete(attachedOnce.m, id)
		}
	}
	attachedOnce.m[c.ID] = time.Unix(c.Expiry, 0).Add(time.Minute)
}

func covers(c *tokenClaims, scopes []string) bool {
	have := strings.Fields(c.Scope)
	for _, s := range scopes {
		ok := false
		for _, h := range have {
			ok = ok || h == s
		}
		if !ok {
			return false
		}
	}
	return true
}

type tokenClaims struct {
	Scope                string         `json:"scope"`
	AuthorizationDetails api.RawDetails `json:"authorization_details"`
	Cnf                  *api.Cnf       `json:"cnf"`
	ID                   string         `json:"jti"`
	Expiry               int64          `json:"exp"`
	AuthTime             int64          `json:"auth_time"`
	SingleUse            bool           `json:"single_use"`
	ACR                  string         `json:"acr"`
}

// peekClaims reads a token's claims without verifying it: the Transport
// only decides whether to attach a token the agent handed it; the server
// verifies.
func peekClaims(tok string) *tokenClaims {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c tokenClaims
	if json.Unmarshal(raw, &c) != nil || c.ID == "" {
		return nil
	}
	return &c
}

func drain(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
