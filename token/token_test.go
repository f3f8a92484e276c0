package token

import (
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

func TestBindingClaimsRoundTrip(t *testing.T) {
	priv, _ := GenerateKey()
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	k := mustKey(t)
	details, _ := api.ParseDetails(api.RawDetails(`[{"type":"wallet_export","address":"0x12ab","n":1}]`))
	c := api.Claims{Issuer: "stepup-agent", Subject: "u", Scope: "wallet:export", ID: "j1", IssuedAt: t0.Unix(), Expiry: t0.Add(time.Minute).Unix(), AuthTime: t0.Unix(), AMR: []string{"otp"}}
	SetBinding(&c, api.TOTP, details, k.Cnf())
	tok, err := s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Verify(tok, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got.ACR != "mfa" || got.AuthTime != t0.Unix() || got.Cnf == nil || got.Cnf.JKT != k.JKT() ||
		string(got.AuthorizationDetails) != string(details.Raw()) {
		t.Fatalf("claims after a round trip = %+v", got)
	}
	// A token without the new claims (minted before binding) still verifies.
	old := c
	old.ClaimsExt = api.ClaimsExt{}
	ot, _ := s.Mint(old)
	if oc, err := s.Verify(ot, t0); err != nil || oc.ACR != "" || oc.Cnf != nil {
		t.Fatalf("an old token: %+v, %v", oc, err)
	}
	// Binding claims that are not well-formed are refused even when signed.
	for name, ext := range map[string]api.ClaimsExt{
		"acr":     {ACR: "bogus"},
		"cnf":     {Cnf: &api.Cnf{JKT: "short"}},
		"details": {AuthorizationDetails: api.RawDetails(`[{"no":"type"}]`)},
	} {
		bad := c
		bad.ClaimsExt = ext
		bt, _ := s.Mint(bad)
		if _, err := s.Verify(bt, t0); !errors.Is(err, ErrMalformed) {
			t.Errorf("bad %s claim: %v; want ErrMalformed", name, err)
		}
	}
	if strings.Contains(tok, "authorizationDetails") {
		t.Error("the token uses the request's field name")
	}
}

// HeldClaims reads what Verify reads from a token this package minted,
// and checks the claims as Verify does (expiry, binding claims), without
// the signature: the agent calls it only for a string it holds.
func TestHeldClaimsReadsWhatVerifyReads(t *testing.T) {
	priv, _ := GenerateKey()
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	k := mustKey(t)
	details, _ := api.ParseDetails(api.RawDetails(`[{"type":"wallet_export","address":"0x12ab","n":1,"memo":"caf\u00e9 <&>"}]`))
	base := api.Claims{Issuer: "stepup-agent", Subject: "u", Scope: "wallet:export wallet:sign", ID: "j1", IssuedAt: t0.Unix(),
		Expiry: t0.Add(time.Minute).Unix(), AuthTime: t0.Unix(), AMR: []string{"otp", "mfa"}, SingleUse: true}
	bound := base
	SetBinding(&bound, api.TOTP, details, k.Cnf())
	for name, c := range map[string]api.Claims{"plain": base, "bound": bound} {
		tok, err := s.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := s.Verify(tok, t0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := HeldClaims(tok, t0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: HeldClaims\n%+v\nVerify\n%+v", name, got, want)
		}
		if _, err := HeldClaims(tok, t0.Add(time.Minute)); !errors.Is(err, ErrExpired) {
			t.Errorf("%s at its expiry: %v; want ErrExpired", name, err)
		}
	}
	bad := base
	bad.ACR = "bogus"
	bt, _ := s.Mint(bad)
	for _, tok := range []string{bt, "", "a.b", "a.!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[]")) + ".c"} {
		if _, err := HeldClaims(tok, t0); !errors.Is(err, ErrMalformed) {
			t.Errorf("HeldClaims(%.30q) = %v; want ErrMalformed", tok, err)
		}
	}
}
