package agent

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/method/recovery"
	totpm "github.com/stepup-agent/stepup-agent/method/totp"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// unpluggable is a method whose availability the test switches, as a
// fingerprint reader's is when it is unplugged.
type unpluggable struct {
	method.Method
	down atomic.Bool
}

func (u *unpluggable) Available() error {
	if u.down.Load() {
		return errors.New("unplugged")
	}
	return nil
}

// The methods and credentials isStepUpRequired offers are cached, and
// follow every change the user can make: a credential enrolled or
// removed and a policy reloaded show at once; a method's own
// availability within offerTTL. A caller of IsStepUpRequired that changes
// its answer changes nothing the next caller sees.
func TestOfferFollowsState(t *testing.T) {
	var pol atomic.Pointer[policy.Policy]
	pol.Store(policy.Default())
	polf := func() *policy.Policy { return pol.Load() }
	deps := method.Deps{Policy: polf, Logger: zap.NewNop()}
	totp := &unpluggable{Method: totpm.New(totpm.Config{Deps: deps})}
	a := runAgent(t, Config{
		Store:   keychain.NewMemory(),
		Policy:  polf,
		Methods: []method.Method{totp, recovery.New(recovery.Config{Deps: deps})},
	})

	check := func(step string, methods []string, creds []api.CredentialRef) {
		t.Helper()
		r, err := a.IsStepUpRequired(callerCtx(), &api.ScopeParams{Scope: "wallet:export"})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !r.Required || !slices.Equal(r.Methods, methods) || !slices.Equal(r.Credentials, creds) {
			t.Fatalf("%s: methods %q credentials %+v; want %q %+v", step, r.Methods, r.Credentials, methods, creds)
		}
		if len(methods) > 0 && (r.DefaultMethod != methods[0] || r.DefaultCredentialID != creds[0].ID) {
			t.Fatalf("%s: default %q %q", step, r.DefaultMethod, r.DefaultCredentialID)
		}
		// A caller may scribble over its answer.
		for i := range r.Methods {
			r.Methods[i] = "scribbled"
		}
		for i := range r.Credentials {
			r.Credentials[i].ID = "scribbled"
		}
	}
	check("nothing enrolled", []string{}, nil)
	phone := &method.Credential{ID: "t1", Method: api.TOTP, Label: "phone"}
	a.creds.add(phone)
	ref := []api.CredentialRef{{ID: "t1", Method: api.TOTP, Label: "phone"}}
	check("enrolled", []string{api.TOTP}, ref)
	check("asked again", []string{api.TOTP}, ref)

	totp.down.Store(true)
	deadline := time.Now().Add(offerTTL + 2*time.Second)
	for {
		r, _ := a.IsStepUpRequired(callerCtx(), &api.ScopeParams{Scope: "wallet:export"})
		if len(r.Methods) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an unplugged method still offered after %v", offerTTL+2*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	totp.down.Store(false)
	a.creds.remove("t1")
	check("removed", []string{}, nil)
	a.creds.add(phone)
	check("enrolled again", []string{api.TOTP}, ref)

	p, err := policy.Parse([]byte("scopes:\n  wallet:export:\n    methods: [recovery_code]\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol.Store(p)
	check("policy allows only recovery codes", []string{}, nil)
}
