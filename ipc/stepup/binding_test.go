package stepup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

func TestClientSendsBindingParams(t *testing.T) {
	path, got := testenv.RecordingAgent(t, `"result":{"required":true,"scope":"wallet:export","methods":["totp"],"credentials":[{"id":"c1","method":"totp","label":"phone"}],"defaultCredentialId":"c1","locked":true,"bind":"client","token":"t","scopes":["wallet:export"],"warnings":["createMfaToken is deprecated: x"]}`)
	c := &Client{Socket: path, Env: &api.PromptEnv{}}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	details := []map[string]any{{"type": "wallet_export", "address": "0x12ab"}}
	cnf := &api.Cnf{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}

	r, err := c.CheckStepUpFor(ctx, Query{Scope: "wallet:export", AuthorizationDetails: details, Cnf: cnf})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Credentials) != 1 || r.Credentials[0].Label != "phone" || r.DefaultCredentialID != "c1" || !r.Locked || r.Bind != "client" {
		t.Errorf("result fields not typed: %+v", r)
	}
	p := <-got
	if string(p["authorizationDetails"]) != `[{"address":"0x12ab","type":"wallet_export"}]` || !strings.Contains(string(p["cnf"]), cnf.JKT) {
		t.Errorf("isStepUpRequired params = %s", p)
	}

	yes := true
	res, err := c.PromptStepUpAuth(ctx, PromptOptions{Scopes: []string{"wallet:export"}, AuthorizationDetails: `[{"type":"x"}]`, CreateMfaToken: &yes,
		Client: &api.ClientClaim{Name: "walletctl"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 {
		t.Errorf("warnings not typed: %+v", res)
	}
	p = <-got
	if string(p["authorizationDetails"]) != `[{"type":"x"}]` || string(p["createMfaToken"]) != "true" || !strings.Contains(string(p["client"]), "walletctl") {
		t.Errorf("prompt params = %s", p)
	}
	if _, ok := p["cnf"]; ok {
		t.Error("an absent cnf is sent")
	}

	if _, err := c.VerifyTokenWith(ctx, "tok", "wallet:export", VerifyOptions{AuthorizationDetails: details, DPoP: "proof", HTM: "POST", HTU: "https://x/y"}); err != nil {
		t.Fatal(err)
	}
	p = <-got
	if string(p["dpop"]) != `"proof"` || string(p["htm"]) != `"POST"` || string(p["htu"]) != `"https://x/y"` || len(p["authorizationDetails"]) == 0 {
		t.Errorf("verifyToken params = %s", p)
	}
	// The old calls send none of it.
	c.CheckStepUp(ctx, "wallet:export")
	if p = <-got; len(p) != 1 {
		t.Errorf("CheckStepUp sends %s; want only scope", p)
	}
	if _, err := c.PromptStepUpAuth(ctx, PromptOptions{Scopes: []string{"a"}, AuthorizationDetails: func() {}}); err == nil {
		t.Error("details that do not marshal were sent")
	}
}
