package stepup

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/stepup-agent/stepup-agent/api"
)

// Result and parameter types of the protocol.
type (
	StepUpRequired = api.StepUpRequired
	TokenResult    = api.TokenResult
	Challenge      = api.Challenge
	Token          = api.GetTokenResult
	Claims         = api.Claims
	Credential     = api.Credential
	Status         = api.Status
)

// PromptOptions are the options of the prompt calls.
type PromptOptions struct {
	// Scopes are the requestedScopes of the elevated token.
	Scopes []string
	// Method picks a verification method; empty lets the agent choose.
	Method string
	// Reason is shown in the prompt ("export wallet 0x12…").
	Reason string
	// Timeout bounds the prompt; zero means the policy's.
	Timeout int // seconds
	// AuthorizationDetails name the action the token is for (RFC 9396):
	// a JSON array of objects with a string "type" and flat fields, or
	// any value that marshals to one ([]map[string]any, a struct slice).
	// The prompt shows them; the token carries them; verifyToken then
	// accepts it only with equal details.
	AuthorizationDetails any
	// Cnf binds the token to a key (RFC 9449): see token.DPoPKey.
	Cnf *api.Cnf
	// Client is what this program says of itself, shown as its claim.
	Client *api.ClientClaim
	// CreateMfaToken is the seed's parameter: alone the agent refuses
	// it, beside Scopes it is ignored with a warning.
	//
	// Deprecated: set Scopes.
	CreateMfaToken *bool
}

// Query names the token a check or getToken asks about: a held token
// counts only with equal details and an equal key.
type Query struct {
	Scope                string
	AuthorizationDetails any
	Cnf                  *api.Cnf
}

// Details marshals an AuthorizationDetails value for the wire (nil:
// none).
func Details(v any) (api.RawDetails, error) {
	switch d := v.(type) {
	case nil:
		return nil, nil
	case api.RawDetails:
		return d, nil
	case json.RawMessage:
		return api.RawDetails(d), nil
	case []byte:
		return api.RawDetails(d), nil
	case string:
		return api.RawDetails(d), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("authorizationDetails: %w", err)
	}
	if string(b) == "null" {
		return nil, nil
	}
	return api.RawDetails(b), nil
}

func (q Query) params() (api.ScopeParams, error) {
	d, err := Details(q.AuthorizationDetails)
	if err != nil {
		return api.ScopeParams{}, err
	}
	return api.ScopeParams{Scope: q.Scope, ActionParams: api.ActionParams{AuthorizationDetails: d, Cnf: q.Cnf}}, nil
}

// CheckStepUpFor is isStepUpRequired for a token with details or a key.
func (c *Client) CheckStepUpFor(ctx context.Context, q Query) (*StepUpRequired, error) {
	p, err := q.params()
	if err != nil {
		return nil, err
	}
	var r StepUpRequired
	if err := c.Call(ctx, api.MethodIsStepUpRequired, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetTokenFor is getToken for a token with details or a key.
func (c *Client) GetTokenFor(ctx context.Context, q Query) (*Token, error) {
	p, err := q.params()
	if err != nil {
		return nil, err
	}
	var r Token
	if err := c.Call(ctx, api.MethodGetToken, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// VerifyOptions are verifyToken's params beyond the token and scope.
type VerifyOptions struct {
	Consume bool
	// AuthorizationDetails are the details of the action about to be
	// taken; a token approved for other details (or none) is refused.
	AuthorizationDetails any
	// DPoP is the request's proof, for a key-bound token, with the
	// method and URL the request was made for.
	DPoP, HTM, HTU string
}

// VerifyTokenWith is verifyToken with details and a DPoP proof.
func (c *Client) VerifyTokenWith(ctx context.Context, token, scope string, o VerifyOptions) (*Claims, error) {
	d, err := Details(o.AuthorizationDetails)
	if err != nil {
		return nil, err
	}
	p := api.VerifyTokenParams{Token: token, Scope: scope, Consume: o.Consume,
		ProofParams: api.ProofParams{AuthorizationDetails: d, DPoP: o.DPoP, HTM: o.HTM, HTU: o.HTU}}
	var r api.VerifyTokenResult
	if err := c.Call(ctx, api.MethodVerifyToken, p, &r); err != nil {
		return nil, err
	}
	return &r.Claims, nil
}

// IsStepUpRequired reports whether scope needs step-up now. It fails
// closed: any error (no agent, a broken connection, a denied scope) means
// true. Use CheckStepUp for the reason.
func (c *Client) IsStepUpRequired(ctx context.Context, scope string) bool {
	r, err := c.CheckStepUp(ctx, scope)
	return err != nil || r.Required
}

// CheckStepUp is isStepUpRequired with the whole answer.
func (c *Client) CheckStepUp(ctx context.Context, scope string) (*StepUpRequired, error) {
	var r StepUpRequired
	if err := c.Call(ctx, api.MethodIsStepUpRequired, api.ScopeParams{Scope: scope}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) promptParams(o PromptOptions) (api.PromptParams, error) {
	env := CallerEnv()
	if c.Env != nil {
		env = *c.Env
	}
	d, err := Details(o.AuthorizationDetails)
	if err != nil {
		return api.PromptParams{}, err
	}
	return api.PromptParams{
		RequestedScopes: o.Scopes, Method: o.Method, Reason: o.Reason, TimeoutSeconds: o.Timeout,
		TTY: env.TTY, Term: env.Term, Display: env.Display, WaylandDisplay: env.WaylandDisplay, Lang: env.Lang,
		ActionParams: api.ActionParams{AuthorizationDetails: d, Cnf: o.Cnf},
		PromptExtras: api.PromptExtras{Client: o.Client, CreateMfaToken: o.CreateMfaToken},
	}, nil
}

func (c *Client) prompt(ctx context.Context, method string, o PromptOptions) (*TokenResult, error) {
	p, err := c.promptParams(o)
	if err != nil {
		return nil, err
	}
	var r TokenResult
	if err := c.callOwn(ctx, method, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// PromptStepUpAuth verifies the user (MFA when they have an MFA
// credential, re-authentication otherwise) and returns the token.
func (c *Client) PromptStepUpAuth(ctx context.Context, o PromptOptions) (*TokenResult, error) {
	return c.prompt(ctx, api.MethodPromptStepUpAuth, o)
}

// PromptMfa verifies the user with an MFA method (TOTP, passkey, recovery code).
func (c *Client) PromptMfa(ctx context.Context, o PromptOptions) (*TokenResult, error) {
	return c.prompt(ctx, api.MethodPromptMfa, o)
}

// PromptReauthenticate verifies the user with a re-authentication method
// (password, email or SMS code, wallet signature).
func (c *Client) PromptReauthenticate(ctx context.Context, o PromptOptions) (*TokenResult, error) {
	return c.prompt(ctx, api.MethodPromptReauthenticate, o)
}

// ResetState revokes the tokens of scopes, or all tokens when none are
// named, and returns how many were revoked.
func (c *Client) ResetState(ctx context.Context, scopes ...string) (int, error) {
	var r api.ResetResult
	err := c.Call(ctx, api.MethodResetState, api.ResetParams{Scopes: scopes}, &r)
	return r.Revoked, err
}

// StartVerification starts a custom-UI verification.
func (c *Client) StartVerification(ctx context.Context, method string, scopes []string) (*Challenge, error) {
	var r Challenge
	if err := c.Call(ctx, api.MethodStartVerification, api.StartVerificationParams{Method: method, RequestedScopes: scopes}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// CompleteVerification answers a challenge and returns the token.
func (c *Client) CompleteVerification(ctx context.Context, challengeID string, response any) (*TokenResult, error) {
	raw, err := json.Marshal(response)
	if err != nil {
		return nil, err
	}
	var r TokenResult
	if err := c.Call(ctx, api.MethodCompleteVerification, api.CompleteVerificationParams{ChallengeID: challengeID, Response: raw}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetToken returns the token the agent holds for scope.
func (c *Client) GetToken(ctx context.Context, scope string) (*Token, error) {
	var r Token
	if err := c.Call(ctx, api.MethodGetToken, api.ScopeParams{Scope: scope}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// VerifyToken checks a token for scope, consuming it when consume is set
// and it is single-use.
func (c *Client) VerifyToken(ctx context.Context, token, scope string, consume bool) (*Claims, error) {
	var r api.VerifyTokenResult
	if err := c.Call(ctx, api.MethodVerifyToken, api.VerifyTokenParams{Token: token, Scope: scope, Consume: consume}, &r); err != nil {
		return nil, err
	}
	return &r.Claims, nil
}

// EnrollStart begins enrolling a credential; params carries the method's
// fields (address, phone, label).
func (c *Client) EnrollStart(ctx context.Context, params api.EnrollStartParams) (*api.EnrollStartResult, error) {
	var r *api.EnrollStartResult
	if err := c.Call(ctx, api.MethodEnrollStart, params, &r); err != nil {
		return nil, err
	}
	return r, nil
}

// EnrollFinish completes an enrollment.
func (c *Client) EnrollFinish(ctx context.Context, enrollmentID string, response any) (*api.EnrollFinishResult, error) {
	raw, err := json.Marshal(response)
	if err != nil {
		return nil, err
	}
	var r api.EnrollFinishResult
	if err := c.callOwn(ctx, api.MethodEnrollFinish, api.EnrollFinishParams{EnrollmentID: enrollmentID, Response: raw}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListCredentials lists the enrolled credentials.
func (c *Client) ListCredentials(ctx context.Context) ([]Credential, error) {
	var r api.ListCredentialsResult
	err := c.Call(ctx, api.MethodListCredentials, struct{}{}, &r)
	return r.Credentials, err
}

// RemoveCredential removes a credential (needs a credential:unlink token).
func (c *Client) RemoveCredential(ctx context.Context, id string) error {
	return c.Call(ctx, api.MethodRemoveCredential, api.RemoveCredentialParams{CredentialID: id}, nil)
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var r Status
	if err := c.Call(ctx, api.MethodStatus, struct{}{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// JWKS returns the agent's token-signing public keys as raw JSON.
func (c *Client) JWKS(ctx context.Context) (json.RawMessage, error) {
	var r json.RawMessage
	err := c.Call(ctx, api.MethodJWKS, struct{}{}, &r)
	return r, err
}

// RequestExternalAuthElevatedToken exchanges a backend's signed assertion
// for a token, with no user interaction.
func (c *Client) RequestExternalAuthElevatedToken(ctx context.Context, assertion string, scopes []string) (*TokenResult, error) {
	var r TokenResult
	if err := c.Call(ctx, api.MethodRequestExternalAuth, api.ExternalAuthParams{Assertion: assertion, RequestedScopes: scopes}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Lock revokes every token and refuses prompts until Unlock.
func (c *Client) Lock(ctx context.Context) error {
	return c.Call(ctx, api.MethodLock, struct{}{}, nil)
}

// Unlock verifies the user and unlocks the agent.
func (c *Client) Unlock(ctx context.Context, o PromptOptions) error {
	p, err := c.promptParams(o)
	if err != nil {
		return err
	}
	return c.callOwn(ctx, api.MethodUnlock, p, nil)
}

// StartOptions are startVerification's params with binding.
type StartOptions struct {
	Method               string
	Scopes               []string
	AuthorizationDetails any
	Cnf                  *api.Cnf
	Client               *api.ClientClaim
}

// StartVerificationWith starts a custom-UI verification for a token with
// details or a key.
func (c *Client) StartVerificationWith(ctx context.Context, o StartOptions) (*Challenge, error) {
	d, err := Details(o.AuthorizationDetails)
	if err != nil {
		return nil, err
	}
	p := api.StartVerificationParams{Method: o.Method, RequestedScopes: o.Scopes,
		ActionParams: api.ActionParams{AuthorizationDetails: d, Cnf: o.Cnf}, Client: o.Client}
	var r Challenge
	if err := c.Call(ctx, api.MethodStartVerification, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
