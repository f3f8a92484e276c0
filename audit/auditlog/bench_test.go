package auditlog

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// BenchmarkWrite: one audited event, as the agent writes it. "nosync"
// leaves out the fsync, so the difference is the durability step's
// latency; "file-keychain" moves the head in the file backend (from the
// head goroutine, off the write path). cpu-µs/op is the process's
// user+system time per record.
//
//	go test -run '^$' -bench Write ./audit/auditlog/
func BenchmarkWrite(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []struct {
		name   string
		noSync bool
		store  func(dir string) HeadStore
	}{
		{"nosync", true, func(string) HeadStore { return keychain.NewMemory() }},
		{"fsync", false, func(string) HeadStore { return keychain.NewMemory() }},
		{"fsync+file-keychain", false, func(dir string) HeadStore {
			s, err := keychain.Open(context.Background(), "file", keychain.Options{StateDir: dir})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			l, err := OpenLog(context.Background(), Options{Path: filepath.Join(dir, "audit.jsonl"), Store: c.store(dir), noSync: c.noSync})
			if err != nil {
				b.Fatal(err)
			}
			l.SetKey(priv, "k")
			r := audit.Record{Event: audit.EventStepUp, PID: 4242, UID: 1000, Exe: "/usr/bin/stepupctl", Method: "totp",
				Scopes: []string{"wallet:export"}, JTI: "Jd8bGk3YHfQ0a1b2c3d4e5", Result: "ok"}
			cpu0 := cpuTime()
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Write(r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			l.Close()
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
