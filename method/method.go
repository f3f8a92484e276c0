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

// Ask says what to ask the user for a challenge: the agent's own prompt
// shows it, and startVerification sends it to a custom UI (api.Ask), so
// that each method's text is written once, here in its package.
type Ask = api.Ask

// StartRequest is what a verification is started for.
type StartRequest struct {
	// Creds are the user's credentials of this method.
	Creds []*Credential
	// Scopes are the scopes the token will carry, normalised, so that a
	// method can name them to the user (the wallet's sign-in message).
	Scopes []string
	// CustomUI is set on the custom-UI path (startVerification): the
	// client shows the Ask and collects the answer itself, and the agent
	// opens nothing for the user.
	CustomUI bool
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
	// method (r.Creds). challenge is sent to the client as is ({} for
	// TOTP).
	Start(ctx context.Context, r StartRequest) (state any, challenge any, err error)
	// Complete checks response against the current credentials. It
	// returns the credential that matched, with Secret updated when the
	// method keeps state (TOTP's last counter, a passkey's sign count);
	// the agent stores it. A wrong answer is ErrVerificationFailed.
	// The agent never runs two Completes of one method at once.
	Complete(ctx context.Context, state any, creds []*Credential, response json.RawMessage) (*Credential, error)
	// Ask says what to prompt for: Label, Input and Field always, Hint
	// and Text as the challenge needs.
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

// Progress is implemented by armed methods whose verification reports,
// while it runs, something the user should read (fprintd's "the scan did
// not work, touch the reader again"). It returns the latest message and a
// channel closed when a newer one is there.
type Progress interface {
	Progress(state any) (string, <-chan struct{})
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

// Deps are what every method takes from the agent, the same way: each
// method package's constructor is New(Config), and its Config embeds Deps.
type Deps struct {
	// Now is the agent's clock, the one the agent itself uses; nil means
	// time.Now.
	Now func() time.Time
	// Logger is the agent's logger; nil means no log.
	Logger *zap.Logger
	// Policy returns the policy in force; nil means the built-in defaults.
	Policy func() *policy.Policy
}

// Clock returns the clock: Now, or time.Now when unset.
func (d Deps) Clock() func() time.Time {
	if d.Now == nil {
		return time.Now
	}
	return d.Now
}

// Log returns the logger named after the method (name), a no-op one when
// unset.
func (d Deps) Log(name string) *zap.Logger {
	if d.Logger == nil {
		return zap.NewNop()
	}
	return d.Logger.Named(name)
}

// PolicyNow returns the policy in force.
func (d Deps) PolicyNow() *policy.Policy {
	if d.Policy == nil {
		return policy.Default()
	}
	return d.Policy()
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
