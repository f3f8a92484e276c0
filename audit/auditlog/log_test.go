package auditlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/keychain"
)

type fixture struct {
	dir   string
	path  string
	store keychain.Store
	priv  ed25519.PrivateKey
	kid   string
	jwks  *jose.JSONWebKeySet
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	f := &fixture{dir: dir, path: filepath.Join(dir, "audit.jsonl"), store: keychain.NewMemory(), priv: priv, kid: "k1"}
	f.jwks = &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv.Public(), KeyID: "k1", Algorithm: "EdDSA"}}}
	return f
}

func (f *fixture) open(t *testing.T, rot Rotation) *Log {
	t.Helper()
	l, err := OpenLog(context.Background(), Options{Path: f.path, Store: f.store, CheckpointEvery: 10,
		Rotation: func() Rotation { return rot }})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetKey(f.priv, f.kid); err != nil {
		t.Fatal(err)
	}
	return l
}

// write appends n records and closes the log (a final checkpoint).
func (f *fixture) write(t *testing.T, n int, rot Rotation) {
	t.Helper()
	l := f.open(t, rot)
	for i := 0; i < n; i++ {
		if err := l.Write(audit.Record{Event: audit.EventStepUp, Method: "totp", Scopes: []string{"wallet:export"}, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) verify(t *testing.T, o audit.VerifyOptions) *audit.Report {
	t.Helper()
	files, err := audit.SetFiles(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if o.JWKS == nil {
		o.JWKS = f.jwks
	}
	rep, err := audit.Verify(files, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func (f *fixture) head(t *testing.T) *audit.Head {
	h, ok, err := (&Log{o: Options{Store: f.store}}).readHead(context.Background())
	if err != nil || !ok {
		t.Fatalf("no head: %v", err)
	}
	return &h
}

func lines(t *testing.T, path string) [][]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func rewrite(t *testing.T, path string, ls [][]byte) {
	if err := os.WriteFile(path, bytes.Join(ls, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantBad(t *testing.T, rep *audit.Report, seq int64) {
	t.Helper()
	if rep.Problem == nil {
		t.Fatalf("verify found nothing wrong (%d records)", rep.Records)
	}
	if rep.Problem.Seq != seq {
		t.Fatalf("first bad seq %d, want %d: %v", rep.Problem.Seq, seq, rep.Problem)
	}
}

func TestIntact(t *testing.T) {
	f := newFixture(t)
	f.write(t, 25, Rotation{})
	f.write(t, 25, Rotation{}) // a restart continues the chain
	rep := f.verify(t, audit.VerifyOptions{Head: f.head(t)})
	if rep.Problem != nil {
		t.Fatal(rep.Problem)
	}
	// 50 records, a checkpoint after every 9 and one at each close.
	if rep.Records != 56 || rep.Checkpoints != 6 || rep.Unchecked != 0 {
		t.Fatalf("records %d checkpoints %d unchecked %d", rep.Records, rep.Checkpoints, rep.Unchecked)
	}
	for i, l := range lines(t, f.path)[:3] {
		if i == 0 && !bytes.Contains(l, []byte(`"prev":"`+audit.Zero+`"`)) {
			t.Fatalf("first record's prev is not zeros: %s", l)
		}
	}
}

func TestTamperCaughtByVerify(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture)
		head   bool // needs the head (a receipt) to be caught
		bad    int64
	}{
		{"byte changed inside a record", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			ls[6] = bytes.Replace(ls[6], []byte("wallet:export"), []byte("wallet:exporT"), 1)
			rewrite(t, f.path, ls)
		}, false, 7},
		{"deleted line", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			rewrite(t, f.path, append(ls[:4:4], ls[5:]...))
		}, false, 5},
		{"two swapped lines", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			ls[11], ls[12] = ls[12], ls[11]
			rewrite(t, f.path, ls)
		}, false, 12},
		{"truncated tail inside a record", func(t *testing.T, f *fixture) {
			b, _ := os.ReadFile(f.path)
			os.WriteFile(f.path, b[:len(b)-30], 0o600)
		}, false, 0},
		{"truncated tail at a line end", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			rewrite(t, f.path, ls[:20])
		}, true, 21},
		{"replaced by an older copy", func(t *testing.T, f *fixture) {
			old, _ := os.ReadFile(f.path)
			f.write(t, 5, Rotation{})
			os.WriteFile(f.path, old, 0o600)
		}, true, 0},
		{"checkpoint with a bad signature", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			i := bytes.Index(ls[9], []byte(`"jws":"`))
			if i < 0 {
				t.Fatalf("line 10 is no checkpoint: %s", ls[9])
			}
			j := bytes.Index(ls[9][i+7:], []byte(`"`)) + i + 7
			c := ls[9][j-5]
			ls[9][j-5] = map[bool]byte{true: 'A', false: 'B'}[c != 'A']
			rewrite(t, f.path, ls)
			// Re-chain the lines after it, as a forger without the key
			// would: only the signature gives it away.
			rechain(t, f.path)
		}, false, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.write(t, 30, Rotation{})
			c.tamper(t, f)
			h := f.head(t)
			o := audit.VerifyOptions{}
			if c.head {
				o.Head = h
				// Without the head, the cut is invisible: say so.
				if rep := f.verify(t, audit.VerifyOptions{}); rep.Problem != nil && c.name == "truncated tail at a line end" {
					t.Fatalf("a clean cut should only show against the head: %v", rep.Problem)
				}
			}
			rep := f.verify(t, o)
			bad := c.bad
			if bad == 0 {
				bad = rep.Last.Seq + 1
			}
			wantBad(t, rep, bad)
			t.Logf("%v", rep.Problem)
		})
	}
}

// rechain rewrites every prev to match the lines as they are now.
func rechain(t *testing.T, path string) {
	ls := lines(t, path)
	prev := audit.Zero
	for i, l := range ls {
		if len(l) == 0 {
			continue
		}
		s := string(l)
		k := strings.Index(s, `"prev":"`) + 8
		s = s[:k] + prev + s[k+64:]
		ls[i] = []byte(s)
		prev = audit.LineHash([]byte(strings.TrimSuffix(s, "\n")))
	}
	rewrite(t, path, ls)
}

func TestRotation(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gzip"}[compress], func(t *testing.T) {
			f := newFixture(t)
			rot := Rotation{MaxSize: 2000, Compress: compress}
			f.write(t, 60, rot)
			f.write(t, 10, rot)
			files, _ := audit.SetFiles(f.path)
			if len(files) < 4 {
				t.Fatalf("want several files, have %v", files)
			}
			for _, n := range files[:len(files)-1] {
				if strings.HasSuffix(n, ".gz") != compress {
					t.Fatalf("rotated file %s, compress %v", n, compress)
				}
			}
			rep := f.verify(t, audit.VerifyOptions{Head: f.head(t)})
			if rep.Problem != nil {
				t.Fatal(rep.Problem)
			}
			if rep.First != 1 {
				t.Fatalf("the set starts at %d", rep.First)
			}
			// A missing middle file.
			first, _ := audit.FirstSeq(files[2])
			os.Remove(files[2])
			wantBad(t, f.verify(t, audit.VerifyOptions{}), first)
			// The agent at start still continues (the head is in the
			// current file), and verify keeps naming the gap.
		})
	}
}

// A crash while a rotated file was being compressed leaves it
// uncompressed, maybe beside a half-written .gz.tmp or a complete .gz:
// the next start finishes the job, and the chain still verifies.
func TestRotationFinishesAfterCrash(t *testing.T) {
	f := newFixture(t)
	rot := Rotation{MaxSize: 2000, Compress: true}
	f.write(t, 60, rot)
	files, _ := audit.SetFiles(f.path)
	if len(files) < 4 {
		t.Fatalf("want several files, have %v", files)
	}
	// Put two rotated files back as a crash leaves them: one plain beside
	// a half-written .gz.tmp, one plain beside its complete .gz.
	for i, gz := range files[:2] {
		plain := strings.TrimSuffix(gz, ".gz")
		rc, err := audit.OpenFile(gz)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		os.WriteFile(plain, b, 0o600)
		if i == 0 {
			os.Remove(gz)
			os.WriteFile(gz+".tmp", b[:len(b)/3], 0o600)
		}
	}
	f.write(t, 1, rot)
	after, _ := audit.SetFiles(f.path)
	for _, n := range after[:len(after)-1] {
		if !strings.HasSuffix(n, ".gz") {
			t.Errorf("rotated file %s is still uncompressed after a start", n)
		}
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(f.path), "*"))
	for _, n := range left {
		if strings.HasSuffix(n, ".tmp") || strings.HasSuffix(n, ".jsonl") && n != f.path {
			t.Errorf("a start left %s behind", n)
		}
	}
	if rep := f.verify(t, audit.VerifyOptions{Head: f.head(t)}); rep.Problem != nil || rep.First != 1 {
		t.Fatalf("the chain after the crash: first %d, %v", rep.First, rep.Problem)
	}
}

func TestRotationKeep(t *testing.T) {
	f := newFixture(t)
	f.write(t, 80, Rotation{MaxSize: 1500, Keep: 2})
	files, _ := audit.SetFiles(f.path)
	if len(files) != 3 {
		t.Fatalf("keep 2: files %v", files)
	}
	rep := f.verify(t, audit.VerifyOptions{Head: f.head(t)})
	if rep.Problem != nil || rep.First == 1 {
		t.Fatalf("first %d: %v", rep.First, rep.Problem)
	}
}

func TestStartCatchesTamper(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture)
	}{
		{"truncated tail", func(t *testing.T, f *fixture) {
			rewrite(t, f.path, lines(t, f.path)[:20])
		}},
		{"older copy", func(t *testing.T, f *fixture) {
			old, _ := os.ReadFile(f.path)
			f.write(t, 5, Rotation{})
			os.WriteFile(f.path, old, 0o600)
		}},
		{"file deleted", func(t *testing.T, f *fixture) { os.Remove(f.path) }},
		{"record changed", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			ls[3] = bytes.Replace(ls[3], []byte("totp"), []byte("TOTP"), 1)
			rewrite(t, f.path, ls)
		}},
		{"rewritten with a fresh chain", func(t *testing.T, f *fixture) {
			ls := lines(t, f.path)
			ls[3] = bytes.Replace(ls[3], []byte("totp"), []byte("TOTP"), 1)
			rewrite(t, f.path, ls)
			rechain(t, f.path)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.write(t, 30, Rotation{})
			c.tamper(t, f)
			h := f.head(t)
			before, _ := os.ReadFile(f.path)
			l := f.open(t, Rotation{})
			if l.Break() == "" {
				t.Fatal("the agent did not report a break")
			}
			t.Log(l.Break())
			l.Write(audit.Record{Event: audit.EventStart, Result: "ok"})
			l.Close()
			// The old file is kept as it was.
			asides, _ := filepath.Glob(filepath.Join(f.dir, "audit.break-*.jsonl"))
			if _, err := os.Stat(f.path); err == nil && len(before) > 0 {
				if len(asides) != 1 {
					t.Fatalf("asides %v", asides)
				}
				kept, _ := os.ReadFile(asides[0])
				if !bytes.Equal(kept, before) {
					t.Fatal("the broken file was changed")
				}
			}
			first := lines(t, f.path)[0]
			if !bytes.Contains(first, []byte(`"event":"chain_break"`)) {
				t.Fatalf("new file starts with %s", first)
			}
			wantBad(t, f.verify(t, audit.VerifyOptions{}), h.Seq+1)
		})
	}
}

func TestStartAdoptsCrashLeftovers(t *testing.T) {
	f := newFixture(t)
	f.write(t, 30, Rotation{})
	h := *f.head(t)
	// The head lags (a crash after the fsync, before the keychain).
	f.write(t, 3, Rotation{})
	h2 := *f.head(t)
	b, _ := jsonHead(h)
	f.store.Put(context.Background(), KindAudit, headName, b)
	// And a torn line a crash cut during write.
	fh, _ := os.OpenFile(f.path, os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString(`{"seq":99,"prev":"`)
	fh.Close()
	l := f.open(t, Rotation{})
	if l.Break() != "" {
		t.Fatalf("a crash reported as a break: %s", l.Break())
	}
	if got := l.Head(); got != h2 {
		t.Fatalf("head %v, want %v", got, h2)
	}
	l.Write(audit.Record{Event: audit.EventStart, Result: "ok"})
	l.Close()
	if rep := f.verify(t, audit.VerifyOptions{Head: f.head(t)}); rep.Problem != nil {
		t.Fatal(rep.Problem)
	}
}

func TestCheckpointsWithoutKeys(t *testing.T) {
	f := newFixture(t)
	f.write(t, 12, Rotation{})
	files, _ := audit.SetFiles(f.path)
	rep, err := audit.Verify(files, audit.VerifyOptions{})
	if err != nil || rep.Problem != nil || rep.Unchecked != rep.Checkpoints || rep.Checkpoints == 0 {
		t.Fatalf("%v %+v", err, rep)
	}
	// Another key set: the checkpoints do not verify.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	rep, _ = audit.Verify(files, audit.VerifyOptions{JWKS: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: other.Public(), KeyID: "k1"}}}})
	wantBad(t, rep, 10)
}

func TestWriteRefusesOwnEvents(t *testing.T) {
	f := newFixture(t)
	l := f.open(t, Rotation{})
	defer l.Close()
	if err := l.Write(audit.Record{Event: audit.EventCheckpoint}); err == nil {
		t.Fatal("a forged checkpoint was written")
	}
}
