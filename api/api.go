// Package api holds the wire types of the stepup-agent protocol: method
// names, parameters, results and error codes. It is the one home for them,
// shared by the daemon (agent, ipc) and the Go client (ipc/stepup).
//
// The protocol is documented in docs/protocol.md (the methods, their
// params and results, the error codes) and docs/methods.md (each
// method's payloads); section names below refer to docs/protocol.md.
package api

import (
	"encoding/json"
	"time"
)

// Method names (docs/protocol.md, "Methods").
const (
	MethodIsStepUpRequired     = "isStepUpRequired"
	MethodPromptStepUpAuth     = "promptStepUpAuth"
	MethodPromptMfa            = "promptMfa"
	MethodPromptReauthenticate = "promptReauthenticate"
	MethodStartVerification    = "startVerification"
	MethodCompleteVerification = "completeVerification"
	MethodGetToken             = "getToken"
	MethodVerifyToken          = "verifyToken"
	MethodResetState           = "resetState"
	MethodEnrollStart          = "enrollStart"
	MethodEnrollFinish         = "enrollFinish"
	MethodListCredentials      = "listCredentials"
	MethodRemoveCredential     = "removeCredential"
	MethodStatus               = "status"
	MethodJWKS                 = "jwks"
	MethodRequestExternalAuth  = "requestExternalAuthElevatedToken"
	MethodLock                 = "lock"
	MethodUnlock               = "unlock"
)

// Methods lists every protocol method's name. The agent's table of
// protocol methods (agent/handle.go) has a row for each, as its test
// checks, and docs/protocol.md a section for each.
var Methods = []string{
	MethodIsStepUpRequired, MethodPromptStepUpAuth, MethodPromptMfa, MethodPromptReauthenticate,
	MethodStartVerification, MethodCompleteVerification, MethodGetToken, MethodVerifyToken,
	MethodResetState, MethodEnrollStart, MethodEnrollFinish, MethodListCredentials,
	MethodRemoveCredential, MethodStatus, MethodJWKS, MethodRequestExternalAuth, MethodLock, MethodUnlock, MethodAuditHead,
}

// Verification method names on the wire and in the policy.
const (
	// MFA methods.
	TOTP         = "totp"
	Passkey      = "passkey"
	RecoveryCode = "recovery_code"
	Fingerprint  = "fingerprint" // through fprintd; amr "fpt"
	// Re-authentication methods.
	Password = "password"
	EmailOTP = "email_otp"
	SMSOTP   = "sms_otp"
	Wallet   = "wallet"
	// Server-authorized.
	ExternalJWT = "external_jwt"
)

// MFAMethods and ReauthMethods list the methods of each route, in the
// order the agent prefers them as defaultMethod.
var (
	MFAMethods    = []string{TOTP, Passkey, RecoveryCode, Fingerprint}
	ReauthMethods = []string{EmailOTP, SMSOTP, Wallet, Password}
)

// IsMFA reports whether m is an MFA method.
func IsMFA(m string) bool {
	for _, x := range MFAMethods {
		if x == m {
			return true
		}
	}
	return false
}

// IsReauth reports whether m is a re-authentication method.
func IsReauth(m string) bool {
	for _, x := range ReauthMethods {
		if x == m {
			return true
		}
	}
	return false
}

// KnownMethod reports whether m is a method name of the protocol.
func KnownMethod(m string) bool { return IsMFA(m) || IsReauth(m) || m == ExternalJWT }

// ScopeParams are the params of isStepUpRequired and getToken.
type ScopeParams struct {
	Scope string `json:"scope"`

	ActionParams // binding.go
}

// StepUpRequired is the result of isStepUpRequired.
type StepUpRequired struct {
	Required      bool       `json:"required"`
	Scope         string     `json:"scope"`
	Methods       []string   `json:"methods"`
	DefaultMethod string     `json:"defaultMethod,omitempty"`
	ExpiresAt     *time.Time `json:"expiresAt,omitempty"`

	CheckExtras // binding.go
}

// PromptEnv says where the requester sits, so that the prompt reaches the
// user there (docs/prompts.md). Clients fill it in automatically.
type PromptEnv struct {
	TTY            string `json:"tty,omitempty"`
	Term           string `json:"term,omitempty"`
	Display        string `json:"display,omitempty"`
	WaylandDisplay string `json:"waylandDisplay,omitempty"`
	Lang           string `json:"lang,omitempty"` // LC_ALL, LC_CTYPE or LANG of the client
}

// PromptParams are the params of promptStepUpAuth, promptMfa,
// promptReauthenticate and unlock.
type PromptParams struct {
	RequestedScopes []string `json:"requestedScopes"`
	Method          string   `json:"method,omitempty"`
	Reason          string   `json:"reason,omitempty"`
	TTY             string   `json:"tty,omitempty"`
	Display         string   `json:"display,omitempty"`
	TimeoutSeconds  int      `json:"timeoutSeconds,omitempty"`
	// Extensions: the rest of the requester's environment.
	Term           string `json:"term,omitempty"`
	WaylandDisplay string `json:"waylandDisplay,omitempty"`
	Lang           string `json:"lang,omitempty"`

	ActionParams // binding.go
	PromptExtras // binding.go
}

// Env returns the prompt environment carried by p.
func (p *PromptParams) Env() PromptEnv {
	return PromptEnv{TTY: p.TTY, Term: p.Term, Display: p.Display, WaylandDisplay: p.WaylandDisplay, Lang: p.Lang}
}

// TokenResult is the "token result" of the protocol.
type TokenResult struct {
	Token     string    `json:"token"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
	Method    string    `json:"method"`

	ResultExtras // binding.go
}

// StartVerificationParams are the params of startVerification.
type StartVerificationParams struct {
	Method          string   `json:"method"`
	RequestedScopes []string `json:"requestedScopes"`
	// Purpose is an extension: "unlock" starts a verification that unlocks
	// the agent instead of minting a token (stepupctl unlock on a
	// terminal). Empty means a token.
	Purpose string `json:"purpose,omitempty"`

	ActionParams              // binding.go
	Client       *ClientClaim `json:"client,omitempty"`
}

// Challenge is the result of startVerification.
type Challenge struct {
	ChallengeID string          `json:"challengeId"`
	Method      string          `json:"method"`
	ExpiresAt   time.Time       `json:"expiresAt"`
	Challenge   json.RawMessage `json:"challenge"`
	// Ask is an extension: what to show the user for this challenge, the
	// same text the agent's own prompt shows (docs/protocol.md,
	// "startVerification, completeVerification").
	Ask Ask `json:"ask"`
}

// Ask is what to ask the user for a challenge: a custom UI renders it
// instead of a text of its own per method, and the agent's own prompt
// shows the same.
type Ask struct {
	// Label is the input's label, e.g. "Code:".
	Label string `json:"label"`
	// Input is the kind of input (InputDigits, ...); InputNone: nothing
	// is typed, completeVerification with {} answers once the user has
	// acted elsewhere (a passkey page, a fingerprint reader).
	Input string `json:"input"`
	// Field is the member of completeVerification's response the answer
	// goes in ("code", "password", "signature"); empty with InputNone.
	Field string `json:"field,omitempty"`
	// Hint is a line to show before the input, e.g. "A code was sent to
	// a***@example.com.".
	Hint string `json:"hint,omitempty"`
	// Text is the challenge's text to show whole, after Hint: the
	// wallet's sign-in message, the passkey page's address on the
	// custom-UI path.
	Text string `json:"text,omitempty"`
}

// The kinds of input of an Ask.
const (
	InputDigits   = "digits"   // a numeric code (TOTP, email, SMS); not echoed
	InputCode     = "code"     // a code of letters and digits (a recovery code); not echoed
	InputPassword = "password" // a password; not echoed
	InputText     = "text"     // text pasted whole (a signature); may be echoed
	InputNone     = "none"     // nothing typed: the answer arrives elsewhere
)

// Secret reports whether the input is hidden as it is typed.
func (a Ask) Secret() bool { return a.Input != InputText && a.Input != InputNone }

// CompleteVerificationParams are the params of completeVerification.
type CompleteVerificationParams struct {
	ChallengeID string          `json:"challengeId"`
	Response    json.RawMessage `json:"response"`
}

// GetTokenResult is the result of getToken.
type GetTokenResult struct {
	Token     string    `json:"token"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
}

// VerifyTokenParams are the params of verifyToken.
type VerifyTokenParams struct {
	Token   string `json:"token"`
	Scope   string `json:"scope"`
	Consume bool   `json:"consume,omitempty"`

	ProofParams // binding.go
}

// Claims are the claims of an elevated access token (docs/protocol.md,
// "Elevated access tokens").
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Scope     string   `json:"scope"`
	ID        string   `json:"jti"`
	IssuedAt  int64    `json:"iat"`
	Expiry    int64    `json:"exp"`
	AuthTime  int64    `json:"auth_time"`
	AMR       []string `json:"amr"`
	SingleUse bool     `json:"single_use"`

	ClaimsExt // binding.go
}

// VerifyTokenResult is the result of verifyToken.
type VerifyTokenResult struct {
	Valid  bool   `json:"valid"`
	Claims Claims `json:"claims"`
}

// ResetParams are the params of resetState.
type ResetParams struct {
	Scopes []string `json:"scopes,omitempty"`
}

// ResetResult is the result of resetState.
type ResetResult struct {
	Revoked int `json:"revoked"`
}

// EnrollStartParams are the params of enrollStart. Method-specific fields
// (address, phone, label) ride along.
type EnrollStartParams struct {
	Method  string `json:"method"`
	Label   string `json:"label,omitempty"`
	Address string `json:"address,omitempty"`
	Phone   string `json:"phone,omitempty"`
	// Raw is the whole params object as sent, for a method's own
	// fields (not on the wire itself).
	Raw json.RawMessage `json:"-"`
}

// KeepRaw keeps the params object as sent in Raw.
func (p *EnrollStartParams) KeepRaw(raw json.RawMessage) { p.Raw = raw }

// EnrollFinishParams are the params of enrollFinish.
type EnrollFinishParams struct {
	EnrollmentID string          `json:"enrollmentId"`
	Response     json.RawMessage `json:"response"`
}

// EnrollFinishResult is the result of enrollFinish.
type EnrollFinishResult struct {
	Method        string   `json:"method"`
	CredentialID  string   `json:"credentialId"`
	RecoveryCodes []string `json:"recoveryCodes,omitempty"`
}

// Credential describes an enrolled credential; it never carries secrets.
type Credential struct {
	ID        string    `json:"id"`
	Method    string    `json:"method"`
	Label     string    `json:"label"`
	CreatedAt time.Time `json:"createdAt"`
	// Remaining is an extension: unused recovery codes left.
	Remaining *int `json:"remaining,omitempty"`
}

// ListCredentialsResult is the result of listCredentials.
type ListCredentialsResult struct {
	Credentials []Credential `json:"credentials"`
}

// RemoveCredentialParams are the params of removeCredential.
type RemoveCredentialParams struct {
	CredentialID string `json:"credentialId"`
}

// RemoveCredentialResult is the result of removeCredential.
type RemoveCredentialResult struct {
	Removed bool `json:"removed"`
}

// KeychainStatus is part of status.
type KeychainStatus struct {
	Backend   string `json:"backend"`
	Available bool   `json:"available"`
	Warning   string `json:"warning,omitempty"`
}

// PolicyStatus is part of status.
type PolicyStatus struct {
	Path     string    `json:"path"`
	LoadedAt time.Time `json:"loadedAt"`
	Error    string    `json:"error,omitempty"`
	Builtin  bool      `json:"builtin,omitempty"`
}

// TokenStatus describes a held token without its value.
type TokenStatus struct {
	Scope     string    `json:"scope"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
	Method    string    `json:"method"`

	TokenBinding // binding.go
}

// Status is the result of status.
type Status struct {
	Version     string         `json:"version"`
	PID         int            `json:"pid"`
	Keychain    KeychainStatus `json:"keychain"`
	Policy      PolicyStatus   `json:"policy"`
	Tokens      []TokenStatus  `json:"tokens"`
	Credentials int            `json:"credentials"`
	Locked      bool           `json:"locked"`
	Prompter    string         `json:"prompter,omitempty"`
	Socket      string         `json:"socket,omitempty"`
	Audit       *AuditStatus   `json:"audit,omitempty"`
	// Remote is set when status was asked through the remote socket: the
	// SSH connection it came through, as the agent names it
	// ("ssh build-01 (pid 4242)"); a forwarded agent (docs/remote.md).
	Remote string `json:"remote,omitempty"`
}

// ExternalAuthParams are the params of requestExternalAuthElevatedToken.
type ExternalAuthParams struct {
	Assertion       string   `json:"assertion"`
	RequestedScopes []string `json:"requestedScopes"`
}

// LockResult is the result of lock and unlock.
type LockResult struct {
	Locked bool `json:"locked"`
}
