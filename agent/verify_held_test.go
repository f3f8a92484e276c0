package agent

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
)

// verifyToken reads a held token's claims without checking its signature
// again (token.HeldClaims), and answers exactly as the signature path
// does; a string that differs from the held one by a byte, a revoked
// token and a consumed one all go through the signature and get the
// answers they got before.
func TestVerifyHeldToken(t *testing.T) {
	a := benchAgent(t)
	ctx := callerCtx()
	tok := mintFor(t, a, "wallet:export") // single use
	if a.tokens.heldToken(tok.Token) == nil {
		t.Fatal("a minted token is not found by its string")
	}
	want, err := a.signer.Verify(tok.Token, a.now())
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.VerifyToken(ctx, &api.VerifyTokenParams{Token: tok.Token, Scope: "wallet:export"})
	if err != nil || !res.Valid {
		t.Fatalf("verifyToken of a held token: %+v, %v", res, err)
	}
	if !reflect.DeepEqual(&res.Claims, want) {
		t.Errorf("claims of the held path\n%+v\nof the signature\n%+v", res.Claims, want)
	}

	// One byte of the payload changed: not the held string, and the
	// signature does not cover it.
	parts := strings.Split(tok.Token, ".")
	b := []byte(parts[1])
	b[len(b)/2] ^= 1
	forged := parts[0] + "." + string(b) + "." + parts[2]
	if _, err := a.VerifyToken(ctx, &api.VerifyTokenParams{Token: forged, Scope: "wallet:export"}); err == nil ||
		!strings.Contains(err.Error(), "not") {
		t.Errorf("a forged token: %v", err)
	}

	res, err = a.VerifyToken(ctx, &api.VerifyTokenParams{Token: tok.Token, Scope: "wallet:export", Consume: true})
	if err != nil || !res.Valid {
		t.Fatalf("consume: %+v, %v", res, err)
	}
	if a.tokens.heldToken(tok.Token) != nil {
		t.Error("a consumed token is still found by its string")
	}
	if _, err := a.VerifyToken(ctx, &api.VerifyTokenParams{Token: tok.Token, Scope: "wallet:export"}); err == nil ||
		!strings.Contains(err.Error(), "already used") {
		t.Errorf("verify after consume: %v", err)
	}

	multi := mintFor(t, a, "wallet:sign")
	a.ResetState(ctx, nil)
	if _, err := a.VerifyToken(ctx, &api.VerifyTokenParams{Token: multi.Token, Scope: "wallet:sign"}); err == nil ||
		!strings.Contains(err.Error(), "revoked") {
		t.Errorf("verify after reset: %v", err)
	}
}
