package api

import (
	"encoding/json"
	"testing"
	"time"
)

// The hand-written encoding of isStepUpRequired's answer is what
// encoding/json writes for every field combination a client can meet.
func TestStepUpRequiredAppendJSONMatchesMarshal(t *testing.T) {
	exp := time.Date(2026, 12, 2, 8, 0, 1, 0, time.UTC)
	expNano := time.Date(2026, 12, 2, 8, 0, 1, 123456789, time.FixedZone("x", 3600+1800))
	cases := []StepUpRequired{
		{},
		{Required: true, Scope: "wallet:export", Methods: []string{}, CheckExtras: CheckExtras{Bind: "client"}},
		{Required: true, Scope: "wallet:export", Methods: []string{"totp", "recovery_code"}, DefaultMethod: "totp",
			CheckExtras: CheckExtras{Credentials: []CredentialRef{{ID: "c1", Method: "totp", Label: "phone <&>"}, {ID: "c2", Method: "recovery_code"}},
				DefaultCredentialID: "c1", Bind: "session"}},
		{Scope: "wallet:sign", Methods: []string{}, ExpiresAt: &exp, CheckExtras: CheckExtras{Bind: "process"}},
		{Scope: "a", ExpiresAt: &expNano},
		{Required: true, Scope: "x", Methods: []string{"password"}, CheckExtras: CheckExtras{Locked: true, Bind: "user"}},
		{Scope: "odd \"quote\" \\ back <tag> & amp \u2028 \x01 \xff é ☃", Methods: []string{"é", "\t"}, DefaultMethod: "<"},
	}
	for _, c := range cases {
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.AppendJSON([]byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("AppendJSON:\n got %s\nwant prefix%s", got, want)
		}
	}
}

func TestStepUpRequiredAppendJSONFailsAsMarshal(t *testing.T) {
	bad := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	r := StepUpRequired{Scope: "s", ExpiresAt: &bad}
	if _, err := json.Marshal(&r); err == nil {
		t.Fatal("json.Marshal accepted the year 10000")
	}
	if _, err := r.AppendJSON(nil); err == nil {
		t.Error("AppendJSON accepted the year 10000")
	}
}

func FuzzStepUpRequiredAppendJSON(f *testing.F) {
	f.Add(true, "wallet:export", "totp", "c1", "client", int64(1764662401), false)
	f.Add(false, "<\u2028>", "\xff", "", "", int64(0), true)
	f.Fuzz(func(t *testing.T, req bool, scope, m, cred, bind string, sec int64, locked bool) {
		r := StepUpRequired{Required: req, Scope: scope, Methods: []string{m}, DefaultMethod: m,
			CheckExtras: CheckExtras{DefaultCredentialID: cred, Bind: bind, Locked: locked}}
		if cred != "" {
			r.Credentials = []CredentialRef{{ID: cred, Method: m, Label: scope}}
		}
		if sec != 0 {
			e := time.Unix(sec%(1<<34), sec%1e9)
			r.ExpiresAt = &e
		}
		want, werr := json.Marshal(&r)
		got, gerr := r.AppendJSON(nil)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: %v, %v", werr, gerr)
		}
		if werr == nil && string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

// A request line written by hand is the one encoding/json writes.
func TestAppendRequestMatchesMarshal(t *testing.T) {
	type envelope struct {
		JSONRPC string `json:"jsonrpc"`
		ID      uint64 `json:"id"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}
	for _, p := range []any{
		nil,
		ScopeParams{Scope: "wallet:export"},
		ScopeParams{Scope: "odd \"<scope>\" \u2028 \xff"},
		ScopeParams{Scope: "payments:send", ActionParams: ActionParams{AuthorizationDetails: RawDetails(`[{"type":"payment","amount":"5"}]`)}},
		ScopeParams{Scope: "k", ActionParams: ActionParams{Cnf: &Cnf{JKT: "abc"}}},
		ResetParams{Scopes: []string{"a", "b"}},
		&ScopeParams{Scope: "ptr"},
		(*ScopeParams)(nil),
		struct {
			ScopeParams
			Extra string `json:"extra"`
		}{ScopeParams{Scope: "s"}, "x"}, // embeds: its own field is kept
	} {
		got, err := AppendRequest(nil, 42, MethodIsStepUpRequired, p)
		if err != nil {
			t.Fatal(err)
		}
		params := p
		if params == nil {
			params = struct{}{}
		}
		want, _ := json.Marshal(envelope{"2.0", 42, MethodIsStepUpRequired, params})
		if string(got) != string(want)+"\n" {
			t.Errorf("%#v:\n got %s\nwant %s", p, got, want)
		}
	}
}

// getToken's hand-written answer is what encoding/json writes.
func TestGetTokenResultAppendJSONMatchesMarshal(t *testing.T) {
	exp := time.Date(2026, 12, 4, 1, 2, 3, 0, time.UTC)
	expNano := time.Date(2026, 12, 4, 1, 2, 3, 450000000, time.FixedZone("x", -5*3600))
	for _, r := range []GetTokenResult{
		{},
		{Token: "eyJhbGciOiJFZERTQSJ9.e30.sig", Scopes: []string{"wallet:export"}, ExpiresAt: exp, SingleUse: true},
		{Token: "a<b>&\"c\u2028", Scopes: []string{"x", "odd \xff"}, ExpiresAt: expNano},
		{Token: "t", Scopes: []string{}, ExpiresAt: exp},
	} {
		got, err := r.AppendJSON(nil)
		want, werr := json.Marshal(&r)
		if (err == nil) != (werr == nil) || string(got) != string(want) {
			t.Errorf("%+v:\n got %s (%v)\nwant %s (%v)", r, got, err, want, werr)
		}
	}
	bad := GetTokenResult{ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := bad.AppendJSON(nil); err == nil {
		t.Error("an expiry past year 9999 encoded; json.Marshal refuses it")
	}
}
