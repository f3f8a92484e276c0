package agent

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
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

// A token item copied under another name in the keychain (only a writer
// of the keychain makes one) is dropped at load: before, the copy stayed
// in the scope index, and isStepUpRequired and getToken kept handing the
// token out after reset and lock had revoked it by its jti.
func TestLoadDropsACopiedTokenItem(t *testing.T) {
	store := keychain.NewMemory()
	a1 := runAgent(t, Config{Store: store})
	tok := mintFor(t, a1, "wallet:sign")
	a1.Flush()
	jti := jtiOf(t, a1, tok.Token)
	data, err := store.Get(context.Background(), keychain.KindToken, jti)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), keychain.KindToken, "copy-of-"+jti, data); err != nil {
		t.Fatal(err)
	}

	a2 := runAgent(t, Config{Store: store})
	if n := a2.tokens.count(); n != 1 {
		t.Fatalf("%d tokens held after load; want 1", n)
	}
	a2.Flush()
	if _, err := store.Get(context.Background(), keychain.KindToken, "copy-of-"+jti); err == nil {
		t.Error("the copied item is still in the keychain")
	}
	r, err := a2.IsStepUpRequired(callerCtx(), &api.ScopeParams{Scope: "wallet:sign"})
	if err != nil || r.Required {
		t.Fatalf("before reset: %+v, %v; want the token held", r, err)
	}
	a2.ResetState(callerCtx(), nil)
	if r, err := a2.IsStepUpRequired(callerCtx(), &api.ScopeParams{Scope: "wallet:sign"}); err != nil || !r.Required {
		t.Fatalf("after reset: %+v, %v; want step-up required", r, err)
	}
}
