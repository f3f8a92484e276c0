package agent

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc"
)

// isStepUpRequired on the socket's path allocates nothing in steady
// state, with a token held and without, once the server has released
// the answer; and a released answer carries nothing into the next.
func TestIsStepUpRequiredAllocatesNothing(t *testing.T) {
	a := benchAgent(t)
	ctx := callerCtx()
	mintFor(t, a, "wallet:sign")
	for _, scope := range []string{"wallet:export", "wallet:sign"} {
		params := json.RawMessage(`{"scope":"` + scope + `"}`)
		call := func() *checkAnswer {
			res, err := a.Handle(ctx, api.MethodIsStepUpRequired, params)
			if err != nil {
				t.Fatal(err)
			}
			return res.(*checkAnswer)
		}
		first := call()
		want := (scope == "wallet:export")
		if first.Required != want || first.Scope != scope || (first.ExpiresAt != nil) == want {
			t.Fatalf("%s: %+v", scope, first.StepUpRequired)
		}
		b, _ := first.AppendJSON(nil)
		first.Release()
		if !raceEnabled {
			if n := testing.AllocsPerRun(200, func() { call().Release() }); n != 0 {
				t.Errorf("%s: %.1f allocations per request, want 0", scope, n)
			}
		}
		again := call()
		if b2, _ := again.AppendJSON(nil); string(b2) != string(b) {
			t.Errorf("%s: answer after release %s, first %s", scope, b2, b)
		}
		again.Release()
	}
	var _ ipc.Releaser = (*checkAnswer)(nil)
}

// The interned names are the names asked for; the set keeps only valid
// names, at most maxInterned of them, and never evicts one in use.
func TestInternSet(t *testing.T) {
	var s internSet
	first := s.get([]byte("wallet:export"))
	for i := range 3 * maxInterned {
		name := fmt.Sprintf("scope:%d", i)
		if got := s.get([]byte(name)); got != name {
			t.Fatalf("get(%q) = %q", name, got)
		}
	}
	if len(s.m) != maxInterned {
		t.Fatalf("%d names held, bound %d", len(s.m), maxInterned)
	}
	if _, ok := s.m[first]; !ok {
		t.Error("a name in use was evicted by a client cycling through names")
	}
	var t2 internSet
	long := strings.Repeat("a", 60<<10) // a line's worth, refused later by the check
	if got := t2.get([]byte(long)); got != long || len(t2.m) != 0 {
		t.Errorf("a %d-byte name was interned (%d held)", len(long), len(t2.m))
	}
}

// getToken for a held token, on the socket's path, allocates nothing
// either, and its answer is the one the Go API returns.
func TestGetTokenAllocatesNothing(t *testing.T) {
	a := benchAgent(t)
	ctx := callerCtx()
	mintFor(t, a, "wallet:sign")
	params := json.RawMessage(`{"scope":"wallet:sign"}`)
	call := func() *tokenAnswer {
		res, err := a.Handle(ctx, api.MethodGetToken, params)
		if err != nil {
			t.Fatal(err)
		}
		return res.(*tokenAnswer)
	}
	want, err := a.GetToken(ctx, &api.ScopeParams{Scope: "wallet:sign"})
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(want)
	got := call()
	if gb, _ := got.AppendJSON(nil); string(gb) != string(wb) {
		t.Fatalf("socket answer %s, Go API %s", gb, wb)
	}
	got.Release()
	if !raceEnabled {
		if n := testing.AllocsPerRun(200, func() { call().Release() }); n != 0 {
			t.Errorf("%.1f allocations per getToken, want 0", n)
		}
	}
}
