package agent

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit/auditlog"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/policy"
)

// BenchmarkAuditedStepUp: the agent's part of a step-up once the user
// has answered (mint, hold, persist, audit "stepup"), without an audit
// log and with the chained, fsynced one. cpu-µs/op is the process's
// user+system time per step-up.
//
//	go test -run '^$' -bench AuditedStepUp ./agent/
func BenchmarkAuditedStepUp(b *testing.B) {
	for _, withLog := range []bool{false, true} {
		b.Run(map[bool]string{false: "no-log", true: "chained-log"}[withLog], func(b *testing.B) {
			store := keychain.NewMemory()
			cfg := Config{Store: store}
			if withLog {
				l, err := auditlog.OpenLog(callerCtx(), auditlog.Options{Path: filepath.Join(b.TempDir(), "audit.jsonl"), Store: store})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { l.Close() })
				cfg.Audit = l
			}
			pol := policy.Default()
			cfg.Policy = func() *policy.Policy { return pol }
			a, err := New(callerCtx(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := callerCtx()
			cpu0 := benchCPU()
			i := 0
			for b.Loop() {
				a.mu.Lock()
				if _, err := a.mint(ctx, []string{"wallet:sign"}, api.TOTP, []string{"otp"}, bindingOf(ctx, nil, nil)); err != nil {
					b.Fatal(err)
				}
				if i++; i%1000 == 0 {
					a.tokens.revoke(anyCaller, nil)
				}
				a.mu.Unlock()
			}
			b.ReportMetric(float64((benchCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func benchCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
