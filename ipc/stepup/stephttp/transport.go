package stephttp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/ipc/stepup"
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

	once   sync.Once
	sem    chan struct{}
	client *stepup.Client
}

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

	first, sent := req, ""
	if len(scopes) > 0 {
		tok, err := t.token(ctx, req, scopes, nil, "")
		if err != nil {
			closeBody(req)
			return nil, err
		}
		first, sent = t.withToken(req, tok), tok
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
	tok, err := t.token(ctx, req, want, ch, sent)
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
	return t.base().RoundTrip(t.withToken(retry, tok))
}

func (t *Transport) withToken(req *http.Request, tok string) *http.Request {
	r := req.Clone(req.Context()) // shares req.Body
	if strings.EqualFold(t.header(), "Authorization") {
		r.Header.Set("Authorization", "Bearer "+tok)
	} else {
		r.Header.Set(t.header(), tok)
	}
	return r
}

// token returns a token for scopes that may be attached now: the agent's
// held one when it covers every scope, is fresh enough for the challenge's
// max_age and, if single-use, was never attached; otherwise a new one from
// a step-up. refused is the token the server just answered with ch; it
// is not attached again.
func (t *Transport) token(ctx context.Context, req *http.Request, scopes []string, ch *Challenge, refused string) (string, error) {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-t.sem }()

	held, err := t.client.GetToken(ctx, scopes[0])
	switch {
	case err == nil:
		c := peekClaims(held.Token)
		if c != nil && t.usable(c, scopes, ch) && (refused == "" || held.Token != refused) {
			t.markUsed(c)
			return held.Token, nil
		}
	case errors.Is(err, stepup.ErrTokenInvalid):
		// None held: step up.
	default:
		return "", &StepUpError{Scopes: scopes, Challenge: ch, Err: err}
	}

	res, err := t.stepUp(ctx, req, scopes)
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

func (t *Transport) stepUp(ctx context.Context, req *http.Request, scopes []string) (*stepup.TokenResult, error) {
	if t.StepUp != nil {
		return t.StepUp(ctx, scopes)
	}
	reason := req.Method + " " + req.URL.Host + req.URL.Path
	if t.Reason != nil {
		reason = t.Reason(req)
	}
	return t.client.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: scopes, Reason: reason})
}

// usable reports whether a held token may be attached for scopes.
func (t *Transport) usable(c *tokenClaims, scopes []string, ch *Challenge) bool {
	if !covers(c, scopes) {
		return false
	}
	if ch != nil && ch.HasMaxAge && time.Since(time.Unix(c.AuthTime, 0)) > ch.MaxAge {
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
	Scope     string `json:"scope"`
	ID        string `json:"jti"`
	Expiry    int64  `json:"exp"`
	AuthTime  int64  `json:"auth_time"`
	SingleUse bool   `json:"single_use"`
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
