package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

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

// Through the socket, a connection's isStepUpRequired costs no
// allocation at all in steady state: the read, the dispatch, the answer
// and the write. (Each allocation brings the next garbage collection
// nearer; under the 64-connection load of bench/ they came every 30 ms.)
// The count is the whole process's, client included, so it allows for a
// stray background allocation, not one per request.
func TestSocketPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; scripts/test-in-session.sh runs this without -race")
	}
	a := benchAgent(t)
	path := filepath.Join(t.TempDir(), "a.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &ipc.Server{Handler: a, UID: -1}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte(`{"jsonrpc":"2.0","id":7,"method":"isStepUpRequired","params":{"scope":"wallet:export"}}` + "\n")
	buf := make([]byte, 4096)
	call := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || n == 0 || buf[n-1] != '\n' || !bytes.Contains(buf[:n], []byte(`"required":true`)) {
			t.Fatalf("answer %q, %v", buf[:n], err)
		}
	}
	for range 200 {
		call()
	}
	const n = 5000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		call()
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.02 {
		t.Errorf("%.2f allocations per request through the socket (%d in %d requests), want 0", per, after.Mallocs-before.Mallocs, n)
	}
}
