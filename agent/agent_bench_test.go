package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/method/password"
	"github.com/stepup-agent/stepup-agent/method/recovery"
	totpm "github.com/stepup-agent/stepup-agent/method/totp"
	"github.com/stepup-agent/stepup-agent/peer"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// Benchmarks of the agent's request path and tokens, in process. The
// daemon as a whole is measured by bench/cmd/stepup-bench
// (docs/BENCHMARKS.md).
//
//	go test -run '^$' -bench . -benchmem ./agent/

// benchAgent is an agent with the methods the daemon offers when nothing
// is enrolled (totp, recovery_code, and password when PAM is set up), and
// the built-in policy.
func benchAgent(tb testing.TB) *Agent {
	tb.Helper()
	pol := policy.Default()
	deps := method.Deps{Policy: func() *policy.Policy { return pol }, Logger: zap.NewNop()}
	ms := []method.Method{totpm.New(totpm.Config{Deps: deps}), recovery.New(recovery.Config{Deps: deps})}
	if pw := password.New(password.Config{Deps: deps}); pw != nil {
		ms = append(ms, pw)
	}
	return runAgent(tb, Config{
		Store:   keychain.NewMemory(),
		Policy:  func() *policy.Policy { return pol },
		Methods: ms,
	})
}

// runAgent makes an agent of cfg and runs its housekeeping until the
// test ends.
func runAgent(tb testing.TB, cfg Config) *Agent {
	tb.Helper()
	a, err := New(callerCtx(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(callerCtx())
	go a.Run(ctx)
	tb.Cleanup(cancel)
	return a
}

// mintFor mints a token for scope as a prompt does, and waits until it
// is stored (as a request's answer does), after which it is handed out.
func mintFor(tb testing.TB, a *Agent, scope string) *api.TokenResult {
	from := a.persist.mark()
	a.mu.Lock()
	t, err := a.mint(callerCtx(), []string{scope}, api.TOTP, []string{"otp"}, bindingOf(callerCtx(), nil, nil))
	a.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	if err := a.persist.barrier(from, persistWait); err != nil {
		tb.Fatal(err)
	}
	return t
}

// TestAgentBenchmarksRun runs the benchmarks' paths once, so that `go test`
// keeps them working.
func TestAgentBenchmarksRun(t *testing.T) {
	a := benchAgent(t)
	ctx := callerCtx()
	r, err := a.IsStepUpRequired(ctx, &api.ScopeParams{Scope: "wallet:export"})
	if err != nil || !r.Required {
		t.Fatalf("wallet:export: %+v, %v", r, err)
	}
	tok := mintFor(t, a, "wallet:sign")
	if r, err := a.IsStepUpRequired(ctx, &api.ScopeParams{Scope: "wallet:sign"}); err != nil || r.Required {
		t.Fatalf("wallet:sign with a token held: %+v, %v", r, err)
	}
	if _, err := a.VerifyToken(ctx, &api.VerifyTokenParams{Token: tok.Token, Scope: "wallet:sign"}); err != nil {
		t.Fatal(err)
	}
	res, err := a.Handle(ctx, api.MethodIsStepUpRequired, json.RawMessage(`{"scope":"wallet:export"}`))
	if err != nil || !res.(*checkAnswer).Required {
		t.Fatalf("Handle: %+v, %v", res, err)
	}
	if per := heldTokenBytes(t, 50); per <= 0 {
		t.Fatalf("heap per token %d", per)
	}
}

// BenchmarkIsStepUpRequired measures the socket's path: the pooled
// answer the server releases once written (IsStepUpRequired, the Go
// API, allocates the answer it returns).
func BenchmarkIsStepUpRequired(b *testing.B) {
	ctx := callerCtx()
	b.Run("required", func(b *testing.B) {
		a := benchAgent(b)
		b.ReportAllocs()
		for b.Loop() {
			if r, err := a.isStepUpRequired(ctx, &api.ScopeParams{Scope: "wallet:export"}); err != nil || !r.Required {
				b.Fatal(r, err)
			} else {
				r.Release()
			}
		}
	})
	b.Run("token-held", func(b *testing.B) {
		a := benchAgent(b)
		mintFor(b, a, "wallet:sign")
		b.ReportAllocs()
		for b.Loop() {
			if r, err := a.isStepUpRequired(ctx, &api.ScopeParams{Scope: "wallet:sign"}); err != nil || r.Required {
				b.Fatal(r, err)
			} else {
				r.Release()
			}
		}
	})
	b.Run("token-held-among-others", func(b *testing.B) {
		// Binding's worst case in practice: the scope holds tokens of
		// ten other clients (each refused by AdmitsAll) beside the
		// caller's own.
		a := benchAgent(b)
		for i := range 10 {
			other := otherCaller(func(id *peer.Identity) { id.PID, id.Executable = 5000+i, fmt.Sprintf("/usr/bin/other%d", i) })
			octx := peer.NewContext(context.Background(), other)
			a.mu.Lock()
			if _, err := a.mint(octx, []string{"wallet:sign"}, api.TOTP, []string{"otp"}, bindingOf(octx, nil, nil)); err != nil {
				b.Fatal(err)
			}
			a.mu.Unlock()
		}
		mintFor(b, a, "wallet:sign")
		b.ReportAllocs()
		for b.Loop() {
			if r, err := a.isStepUpRequired(ctx, &api.ScopeParams{Scope: "wallet:sign"}); err != nil || r.Required {
				b.Fatal(r, err)
			} else {
				r.Release()
			}
		}
	})
	b.Run("handle", func(b *testing.B) {
		// Handle: params decoding and error mapping included.
		a := benchAgent(b)
		params := json.RawMessage(`{"scope":"wallet:export"}`)
		b.ReportAllocs()
		for b.Loop() {
			res, err := a.Handle(ctx, api.MethodIsStepUpRequired, params)
			if err != nil {
				b.Fatal(err)
			}
			res.(ipc.Releaser).Release() // as the server does once the answer is written
		}
	})
}

// BenchmarkGetToken: getToken for a held token on the socket's path.
func BenchmarkGetToken(b *testing.B) {
	ctx := callerCtx()
	a := benchAgent(b)
	mintFor(b, a, "wallet:sign")
	params := json.RawMessage(`{"scope":"wallet:sign"}`)
	b.ReportAllocs()
	for b.Loop() {
		res, err := a.Handle(ctx, api.MethodGetToken, params)
		if err != nil {
			b.Fatal(err)
		}
		res.(ipc.Releaser).Release()
	}
}

func BenchmarkMint(b *testing.B) {
	a := benchAgent(b)
	ctx := callerCtx()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.mu.Lock()
		if _, err := a.mint(ctx, []string{"wallet:sign"}, api.TOTP, []string{"otp"}, bindingOf(ctx, nil, nil)); err != nil {
			b.Fatal(err)
		}
		if i++; i%1000 == 0 {
			a.tokens.revoke(anyCaller, nil) // keep the table small
		}
		a.mu.Unlock()
	}
}

func BenchmarkVerifyToken(b *testing.B) {
	a := benchAgent(b)
	ctx := callerCtx()
	tok := mintFor(b, a, "wallet:sign")
	p := &api.VerifyTokenParams{Token: tok.Token, Scope: "wallet:sign"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.VerifyToken(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

// heldTokenBytes mints n tokens, one scope each, in a fresh agent and
// returns the live heap they add, per token: the agent's table and the
// memory keychain's copy (what a daemon with --keychain memory keeps).
func heldTokenBytes(tb testing.TB, n int) int64 {
	a := benchAgent(tb)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		mintFor(tb, a, fmt.Sprintf("bench:%05d", i))
	}
	a.Flush()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := a.TokenCount(); got != n {
		tb.Fatalf("%d tokens held, want %d", got, n)
	}
	runtime.KeepAlive(a)
	return int64(after.HeapAlloc-before.HeapAlloc) / int64(n)
}

// BenchmarkHeldTokens10k reports the heap that 10,000 live tokens take.
func BenchmarkHeldTokens10k(b *testing.B) {
	var per int64
	for b.Loop() {
		per = heldTokenBytes(b, 10000)
	}
	b.ReportMetric(float64(per), "heap-B/token")
	b.ReportMetric(float64(per*10000)/(1<<20), "heap-MiB/10k")
}

// BenchmarkStatus measures status with one token held (the answer is
// rebuilt on every call: it reports the keychain's and the audit log's
// state, which change without the agent being told).
func BenchmarkStatus(b *testing.B) {
	a := benchAgent(b)
	mintFor(b, a, "wallet:sign")
	b.ReportAllocs()
	for b.Loop() {
		if st := a.Status(); len(st.Tokens) != 1 {
			b.Fatalf("status: %+v", st)
		}
	}
}
