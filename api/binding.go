package api

import (
	"encoding/base64"
	"strings"
)

// This file holds the wire fields of caller, action and key binding
// (docs/protocol.md, "Binding"; DESIGN.md "Caller and action binding").
// They are optional: absent means the behaviour before binding. The
// structs are embedded in the method types of api.go, so their fields sit
// at the top level of the params and results on the wire.

// Authentication context classes of the acr claim (RFC 9470).
const (
	ACRMFA      = "mfa"      // an MFA method verified the user
	ACRReauth   = "reauth"   // a re-authentication method did
	ACRExternal = "external" // a backend's signed assertion (external_jwt)
)

// ACROf returns the acr of a token minted by method m ("" for an unknown
// method).
func ACROf(m string) string {
	switch {
	case IsMFA(m) || m == "fingerprint":
		return ACRMFA
	case IsReauth(m):
		return ACRReauth
	case m == ExternalJWT:
		return ACRExternal
	}
	return ""
}

// Cnf is a token's confirmation claim (RFC 7800) and the request field
// that asks for it: JKT is the RFC 7638 SHA-256 thumbprint of the
// client's public JWK, base64url without padding (RFC 9449).
type Cnf struct {
	JKT string `json:"jkt"`
}

// Check validates c as a request parameter.
func (c *Cnf) Check() error {
	if c == nil {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c.JKT)
	if err != nil || len(b) != 32 || strings.ContainsAny(c.JKT, "=+/") {
		return Errorf(CodeInvalidParams, "cnf.jkt is not a JWK thumbprint: it must be the base64url (unpadded) SHA-256 thumbprint of your public key, 43 characters (RFC 7638)").
			WithHint("compute it from the DPoP key's public JWK, or leave cnf out for a token not bound to a key")
	}
	return nil
}

// Same reports whether a and b name the same key (both nil: same).
func (c *Cnf) Same(o *Cnf) bool {
	if c == nil || o == nil {
		return c == nil && o == nil
	}
	return c.JKT == o.JKT
}

// ActionParams are the binding fields of isStepUpRequired, getToken, the
// prompt methods, unlock and startVerification: the action the token is
// for (RFC 9396, see ParseDetails) and the key it is bound to. A held
// token counts only for a request with equal details and an equal cnf.
type ActionParams struct {
	AuthorizationDetails RawDetails `json:"authorizationDetails,omitempty"`
	Cnf                  *Cnf       `json:"cnf,omitempty"`
}

// ClientClaim is what a caller says of itself (shown in prompts as its
// claim; used by remote callers; never used for binding).
type ClientClaim struct {
	Name string `json:"name,omitempty"`
	PID  int    `json:"pid,omitempty"`
	Host string `json:"host,omitempty"`
}

// PromptExtras are the further optional fields of the prompt methods.
type PromptExtras struct {
	Client *ClientClaim `json:"client,omitempty"`
	// CreateMfaToken is the seed's deprecated parameter; see
	// CheckCreateMfaToken.
	//
	// Deprecated: pass RequestedScopes.
	CreateMfaToken *bool `json:"createMfaToken,omitempty"`
}

// DeprecatedCreateMfaToken is the warning of a request that sent
// createMfaToken beside requestedScopes.
const DeprecatedCreateMfaToken = "createMfaToken is deprecated: it is ignored; requestedScopes says what the token is for"

// CheckCreateMfaToken applies DESIGN.md's rule for the deprecated
// createMfaToken: absent, nothing; alone (no requestedScopes), -32602
// saying to pass requestedScopes; beside requestedScopes, ignored with a
// warning for the result's warnings.
func CheckCreateMfaToken(createMfaToken *bool, requestedScopes []string) (warnings []string, err error) {
	if createMfaToken == nil {
		return nil, nil
	}
	if len(requestedScopes) == 0 {
		return nil, Errorf(CodeInvalidParams, "createMfaToken is deprecated and mints nothing by itself: requestedScopes is missing").
			WithHint(`pass requestedScopes: the scopes the token is for, e.g. {"requestedScopes": ["wallet:export"]}, and drop createMfaToken`)
	}
	return []string{DeprecatedCreateMfaToken}, nil
}

// CredentialRef names a credential that can answer a step-up (Dynamic's
// checkStepUpAuth list).
type CredentialRef struct {
	ID     string `json:"id"`
	Method string `json:"method"`
	Label  string `json:"label"`
}

// CheckExtras are the added fields of the isStepUpRequired result.
type CheckExtras struct {
	Credentials         []CredentialRef `json:"credentials,omitempty"`
	DefaultCredentialID string          `json:"defaultCredentialId,omitempty"`
	Locked              bool            `json:"locked,omitempty"` // absent: not locked
	// Bind is the scope's binding: process, client, session or user.
	Bind string `json:"bind,omitempty"`
}

// ResultExtras are the added fields of the token result.
type ResultExtras struct {
	Warnings []string `json:"warnings,omitempty"`
}

// ClaimsExt are the binding claims of an elevated access token.
type ClaimsExt struct {
	// ACR is mfa, reauth or external (RFC 9470, with auth_time).
	ACR string `json:"acr,omitempty"`
	// AuthorizationDetails are the details the user approved, verbatim.
	AuthorizationDetails RawDetails `json:"authorization_details,omitempty"`
	// Cnf binds the token to a key: a relying party accepts it only with
	// a DPoP proof by that key.
	Cnf *Cnf `json:"cnf,omitempty"`
}

// ProofParams are the added params of verifyToken: the details the
// relying party is about to act on, and a DPoP proof (RFC 9449) with
// the method and URL it was made for.
type ProofParams struct {
	AuthorizationDetails RawDetails `json:"authorizationDetails,omitempty"`
	DPoP                 string     `json:"dpop,omitempty"`
	HTM                  string     `json:"htm,omitempty"`
	HTU                  string     `json:"htu,omitempty"`
}

// TokenBinding are the added fields of a status token: whom it is bound
// to (peer.Describe), whether it carries details, whether it is bound
// to a key.
type TokenBinding struct {
	BoundTo  string   `json:"boundTo,omitempty"`
	Bind     []string `json:"bind,omitempty"`
	Details  bool     `json:"details,omitempty"`
	KeyBound bool     `json:"keyBound,omitempty"`
}

// BindingRefusedHint is the hint of getToken's 4007 for a caller outside
// a token's binding; boundTo is peer.Describe of the token, bind its
// scopes' binding.
func BindingRefusedHint(boundTo, bind string) string {
	return "a token is held, but it is bound to " + boundTo + " (bind: " + bind + "); step up from this program, " +
		"or set scopes.<scope>.bind in the policy where sharing the token is the point"
}
