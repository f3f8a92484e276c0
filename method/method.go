// Package method defines what a verification method is to the agent: how
// it enrolls a credential, how it challenges the user, how it checks the
// answer. The agent owns everything around that: routing, failure limits,
// storage of credentials, minting. Each method lives in a subpackage
// (method/totp, ...).
package method

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// ErrVerificationFailed is returned by Complete for a wrong, replayed or
// malformed answer. It counts as a failure against the method's limit.
var ErrVerificationFailed = errors.New("verification failed")

// ErrCodeUsed is an ErrVerificationFailed for a code that is right but was
// used before (a TOTP code of a step already spent, such as the one just
// enrolled with), so that the user is told to wait for the next code
// rather than that the code is wrong.
var ErrCodeUsed = fmt.Errorf("%w: the code was already used", ErrVerificationFailed)

// Credential is an enrolled credential. Secret is the method's private
// data (a TOTP secret and counter, a passkey's public key and sign count,
// hashes of recovery codes); it is stored in the keychain and never leaves
// the agent.
type Credential struct {
	ID        string          `json:"id"`
	Method    string          `json:"method"`
	Label     string          `json:"label"`
	CreatedAt time.Time       `json:"createdAt"`
	Secret    json.RawMessage `json:"secret"`
}

// EnrollParams are enrollStart's params as the method sees them.
type EnrollParams struct {
	Label   string
	Address string
	Phone   string
	Raw     json.RawMessage // the whole params object
}

// Ask tells the agent's prompt what to ask the user for a challenge.
type Ask struct {
	Prompt      string // the input's label, e.g. "Authenticator code:"
	Description string // an extra line, e.g. "A code was sent to a***@example.com"
	// Field is the response member the typed answer goes in ("code",
	// "password", "signature"). Empty: nothing is typed; the method
	// implements Waiter and the prompt only offers Cancel.
	Field string
}

// Method is one verification method.
type Method interface {
	// Name is the method's wire name (api.TOTP, ...).
	Name() string
	// AMR returns the RFC 8176 values for tokens minted by this method.
	AMR() []string

	// EnrollStart begins enrolling a credential. state is kept by the
	// agent and handed back to EnrollFinish; payload (one of api's
	// *Enrollment types, or nil) goes into enrollStart's result next to
	// enrollmentId.
	EnrollStart(ctx context.Context, p EnrollParams) (state any, payload api.EnrollPayload, err error)
	// EnrollFinish checks the response and returns the new credential
	// (ID, CreatedAt and Method are filled in by the agent when empty).
	EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*Credential, error)

	// Start begins a verification against the user's credentials of this
	// method. challenge is sent to the client as is ({} for TOTP).
	Start(ctx context.Context, creds []*Credential) (state any, challenge any, err error)
	// Complete checks response against the current credentials. It
	// returns the credential that matched, with Secret updated when the
	// method keeps state (TOTP's last counter, a passkey's sign count);
	// the agent stores it. A wrong answer is ErrVerificationFailed.
	// The agent never runs two Completes of one method at once.
	Complete(ctx context.Context, state any, creds []*Credential, response json.RawMessage) (*Credential, error)
	// Ask says what to prompt for.
	Ask(state any) Ask
}

// Waiter is implemented by methods whose answer arrives elsewhere (a
// passkey ceremony in the browser): Wait blocks until it has, and returns
// the response to pass to Complete.
type Waiter interface {
	Wait(ctx context.Context, state any) (json.RawMessage, error)
}

// Availability is implemented by methods that need hardware or a service
// that comes and goes (a fingerprint reader and fprintd): the agent lists
// and offers the method only while Available returns nil. Available must
// answer at once, from memory (isStepUpRequired calls it inline).
type Availability interface {
	Available() error
}

// Armed is implemented by waiting methods whose verification runs by
// itself once started, on this machine, with nothing to open or type (a
// fingerprint reader, armed by Start). A prompt may offer such a method
// beside a typed code: both run at once and the first success wins.
type Armed interface {
	Method
	Waiter
	Armed() bool
}

// SingleShot is implemented by methods whose challenge is used up by its
// first answer, right or wrong (the wallet's sign-in message and its
// nonce): after a wrong answer the agent starts a new challenge before it
// asks again.
type SingleShot interface {
	SingleShot() bool
}

// NoCredential is implemented by methods that need no enrolled credential
// (password: the OS account is the credential).
type NoCredential interface {
	NeedsNoCredential() bool
}

// Counter is implemented by methods whose credential holds a number of
// uses left (recovery codes), shown by listCredentials.
type Counter interface {
	Remaining(c *Credential) int
}

// RecoveryGenerator is implemented by the recovery_code method: the agent
// calls it when the first MFA credential is enrolled and shows the codes
// once.
type RecoveryGenerator interface {
	Generate(ctx context.Context) (cred *Credential, codes []string, err error)
}

// Deps are what methods may use from the agent.
type Deps struct {
	Policy func() *policy.Policy
	Logger *zap.Logger
}

type promptEnvKey struct{}

// WithPromptEnv returns ctx carrying the requester's environment, so that a
// method that opens something for the user (a browser) opens it where the
// user is.
func WithPromptEnv(ctx context.Context, env api.PromptEnv) context.Context {
	return context.WithValue(ctx, promptEnvKey{}, env)
}

// PromptEnvFrom returns the requester's environment carried by ctx.
func PromptEnvFrom(ctx context.Context) (api.PromptEnv, bool) {
	env, ok := ctx.Value(promptEnvKey{}).(api.PromptEnv)
	return env, ok
}

type scopesKey struct{}

// WithScopes returns ctx carrying the scopes a verification is for, so
// that a method can name them to the user (the wallet's sign-in message).
func WithScopes(ctx context.Context, scopes []string) context.Context {
	return context.WithValue(ctx, scopesKey{}, scopes)
}

// ScopesFrom returns the scopes carried by ctx.
func ScopesFrom(ctx context.Context) []string {
	s, _ := ctx.Value(scopesKey{}).([]string)
	return s
}
