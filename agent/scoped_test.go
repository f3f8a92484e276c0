package agent

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
)

// Params read on the fast path decode to what encoding/json reads, and
// every other shape is left to encoding/json.
func TestScopeOnlyMatchesJSON(t *testing.T) {
	for _, in := range scopeOnlySeeds {
		checkScopeOnly(t, in)
	}
	for in, want := range map[string]bool{
		`{"scope":"wallet:export"}`:                  true,
		" {\n\t\"scope\" :\r \"a\" } ":               true,
		`{"scope":""}`:                               true,
		`{"Scope":"wallet:export"}`:                  false, // encoding/json folds case; left to it
		`{"scope":"a","scope":"b"}`:                  false,
		`{"scope":"wallet:export","cnf":{"jkt":""}}`: false,
		`{"scope":"a\u0041"}`:                        false,
		`{"scope":"é"}`:                              false,
		`{"scope":"a"}x`:                             false,
		`{"scope":1}`:                                false,
		`null`:                                       false,
		``:                                           false,
	} {
		if _, ok := scopeOnly([]byte(in)); ok != want {
			t.Errorf("scopeOnly(%q) = %v, want %v", in, ok, want)
		}
	}
}

var scopeOnlySeeds = []string{
	`{"scope":"wallet:export"}`, `{"scope":"a b"}`, ` { "scope" : "x" } `, `{"scope":"\u0041"}`,
	`{"scope":"a"`, `{"scope" "a"}`, `{"scope":"a",}`, `{}`, `{"scope":null}`, "{\"scope\":\"\x7f\"}",
}

func checkScopeOnly(t *testing.T, in string) {
	scope, ok := scopeOnly([]byte(in))
	if !ok {
		return
	}
	var want api.ScopeParams
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatalf("scopeOnly read %q, which encoding/json refuses: %v", in, err)
	}
	if got := (api.ScopeParams{Scope: scope}); !reflect.DeepEqual(got, want) {
		t.Fatalf("scopeOnly(%q) = %+v, encoding/json %+v", in, got, want)
	}
}

func FuzzScopeOnly(f *testing.F) {
	for _, s := range scopeOnlySeeds {
		f.Add(s)
	}
	f.Fuzz(checkScopeOnly)
}
