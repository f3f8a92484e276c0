package token

import (
	"errors"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// Errors of CheckRequest. Their messages name the cause, never the token,
// and say what the relying party or client should do.
var (
	ErrDetailsMismatch = errors.New("the token was approved for other authorization details than this action's")
	ErrDetailsMissing  = errors.New("the token was approved for specific authorization details: pass the details of the action (authorizationDetails) to verify it")
	ErrDetailsUnbound  = errors.New("the token was approved without authorization details, and this action names some: step up for this action")
)

// SetBinding fills the binding claims of a token about to be minted: acr
// from the method, the approved details verbatim, the key. auth_time is
// the caller's (the time of the verification).
func SetBinding(c *api.Claims, method string, details *api.Details, cnf *api.Cnf) {
	c.ACR = api.ACROf(method)
	c.AuthorizationDetails = details.Raw()
	if cnf != nil {
		c.Cnf = &api.Cnf{JKT: cnf.JKT}
	}
}

// checkBindingClaims refuses a signed token whose binding claims are not
// well-formed: an unknown acr, a cnf without a valid jkt, details that do
// not validate. The agent never mints such a token.
func checkBindingClaims(c *api.Claims) error {
	switch c.ACR {
	case "", api.ACRMFA, api.ACRReauth, api.ACRExternal:
	default:
		return errors.New("unknown acr")
	}
	if c.Cnf != nil {
		if err := c.Cnf.Check(); err != nil {
			return err
		}
	}
	if len(c.AuthorizationDetails) > 0 {
		if _, err := api.ParseDetails(c.AuthorizationDetails); err != nil {
			return err
		}
	}
	return nil
}

// CheckDetails compares the token's authorization_details with those the
// relying party is about to act on (JSON equality; absent matches only
// absent). want must have been validated (api.ParseDetails).
func CheckDetails(c *api.Claims, want *api.Details) error {
	have, err := api.ParseDetails(c.AuthorizationDetails)
	if err != nil {
		return ErrMalformed
	}
	switch {
	case have == nil && want == nil:
		return nil
	case have == nil:
		return ErrDetailsUnbound
	case want == nil:
		return ErrDetailsMissing
	case !have.Equal(want):
		return ErrDetailsMismatch
	}
	return nil
}

// CheckRequest checks what verifyToken's params bring against a verified
// token's binding claims: equal details, and for a key-bound token
// (cnf.jkt) a DPoP proof by that key for htm and htu, fresh and never
// seen before (dpop records its jti). It is what the agent's verifyToken
// and the stephttp middleware both apply after the signature and expiry;
// p.AuthorizationDetails must already have been validated by the caller
// for its -32602 (an invalid value here is refused as a mismatch).
func CheckRequest(c *api.Claims, tok string, p api.ProofParams, dpop *DPoPVerifier, now time.Time) error {
	want, err := api.ParseDetails(p.AuthorizationDetails)
	if err != nil {
		return ErrDetailsMismatch
	}
	if err := CheckDetails(c, want); err != nil {
		return err
	}
	if c.Cnf == nil {
		// A plain token needs no proof; a proof sent with it is ignored
		// (RFC 9449 section 7.1 lets a server accept both).
		return nil
	}
	if p.DPoP == "" {
		return ErrProofMissing
	}
	return dpop.Verify(Proof{JWT: p.DPoP, HTM: p.HTM, HTU: p.HTU, Token: tok, JKT: c.Cnf.JKT}, now)
}
