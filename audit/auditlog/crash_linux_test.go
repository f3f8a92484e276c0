package auditlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/internal/keyringtest"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// The crash loop: a child process writes a burst of records into a log
// whose head is in a real keychain (the file backend, or gnome-keyring on
// a private bus) and is killed with SIGKILL at a random point, also
// during its start; then it starts again. A crash must never read as a
// break, and the whole chain must verify at the end. With tampering
// between kills, every tamper must be reported at the next start.
//
// STEPUP_AUDIT_KILLS sets the number of kills per run (default 25, so
// that CI stays short; scripts/audit-kill-loop.sh runs 200 and more).

var crashSeed = bytes.Repeat([]byte{7}, ed25519.SeedSize)

// TestCrashChild is the child's body; it does nothing unless started by
// the crash loop.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("STEPUP_AUDIT_CRASH_CHILD")
	if dir == "" {
		t.Skip("the crash loop's child; runs only inside TestCrashLoop")
	}
	ctx := context.Background()
	store, err := keychain.Open(ctx, os.Getenv("STEPUP_AUDIT_CRASH_KEYCHAIN"), keychain.Options{StateDir: dir})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	l, err := OpenLog(ctx, Options{Path: filepath.Join(dir, "audit.jsonl"), Store: store, CheckpointEvery: 7,
		Rotation: func() Rotation { return Rotation{MaxSize: 6000, Compress: true} }})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	if err := l.SetKey(ed25519.NewKeyFromSeed(crashSeed), "crash"); err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	w := ""
	if sw, ok := store.(keychain.Warner); ok && l.Warning() != "" {
		w = " [" + sw.Warning() + "]"
	}
	fmt.Printf("ready %d %q %q\n", l.Head().Seq, l.Break(), l.Warning()+w)
	for i := 0; ; i++ {
		if err := l.Write(audit.Record{Event: audit.EventStepUp, Method: "totp", Scopes: []string{"wallet:export"}, JTI: strconv.Itoa(i), Result: "ok"}); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
	}
}

func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	kills := 25
	if s := os.Getenv("STEPUP_AUDIT_KILLS"); s != "" {
		kills, _ = strconv.Atoi(s)
	}
	for _, backend := range []string{"file", "secretservice"} {
		for _, tamper := range []bool{false, true} {
			name := backend + map[bool]string{false: "/crash", true: "/tamper"}[tamper]
			t.Run(name, func(t *testing.T) {
				var env []string
				if backend == "secretservice" {
					testenv.Program(t, "dbus-daemon")
					testenv.Program(t, "gnome-keyring-daemon")
					k, err := keyringtest.Start(func(addr string) error {
						t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
						s, err := keychain.OpenSecretService(context.Background(), keychain.Options{Timeout: time.Second})
						if err == nil {
							s.Close()
						}
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(k.Close)
					t.Setenv("DBUS_SESSION_BUS_ADDRESS", k.Addr)
					env = k.Env()
				}
				crashLoop(t, backend, kills, tamper, env)
			})
		}
	}
}

type crashRun struct {
	t       *testing.T
	dir     string
	backend string
	env     []string
}

// start runs the child; ready reports its first line ("ready SEQ BREAK").
func (c *crashRun) start() (*exec.Cmd, <-chan string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(append([]string(nil), c.env...), "STEPUP_AUDIT_CRASH_CHILD="+c.dir, "STEPUP_AUDIT_CRASH_KEYCHAIN="+c.backend)
	if c.env == nil {
		cmd.Env = append(os.Environ(), cmd.Env...)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { c.kill(cmd) })
	ready := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			ready <- s.Text()
		}
		close(ready)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "error") {
				fmt.Fprintln(os.Stderr, "child:", s.Text())
			}
		}
	}()
	return cmd, ready
}

func (c *crashRun) kill(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
}

// waitReady returns the child's break ("" when none), and its warning
// when it could not read the head.
func (c *crashRun) waitReady(ready <-chan string) (brk, warn string, ok bool) {
	select {
	case l, open := <-ready:
		if !open {
			return "", "", false
		}
		var seq int64
		if _, err := fmt.Sscanf(l, "ready %d %q %q", &seq, &brk, &warn); err != nil {
			c.t.Fatalf("child: %s", l)
		}
		return brk, warn, true
	case <-time.After(20 * time.Second):
		c.t.Fatal("the child did not start in 20s")
	}
	return "", "", false
}

// head reads the head as the next start will; the zero Head when there
// is none yet (the child was killed before its first record). The Secret
// Service session sometimes cannot decrypt a secret (the store then says
// it is unavailable): a new session is tried.
func (c *crashRun) head() audit.Head {
	var why string
	for try := 0; try < 5; try++ {
		store, err := keychain.Open(context.Background(), c.backend, keychain.Options{StateDir: c.dir})
		if err != nil {
			c.t.Fatal(err)
		}
		h, ok, err := (&Log{o: Options{Store: store}}).readHead(context.Background())
		if w, isW := store.(keychain.Warner); isW {
			why = w.Warning()
		}
		store.Close()
		if err == nil {
			if !ok {
				return audit.Head{}
			}
			return h
		}
	}
	c.t.Fatalf("no head in the keychain: %s", why)
	return audit.Head{}
}

func crashLoop(t *testing.T, backend string, kills int, tamper bool, env []string) {
	c := &crashRun{t: t, dir: t.TempDir(), backend: backend, env: env}
	path := filepath.Join(c.dir, "audit.jsonl")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var older []byte
	tampers, breaks, early, unchecked, uncheckedTampers := 0, 0, 0, 0, 0
	late := false
	pending := "" // the tamper the next start must report
	for i := 0; i < kills; i++ {
		cmd, ready := c.start()
		if pending == "" && rng.IntN(5) == 0 {
			// Kill it during its start: reading, checking, adopting.
			time.Sleep(time.Duration(rng.IntN(30000)) * time.Microsecond)
			c.kill(cmd)
			early++
			continue
		}
		brk, warn, ok := c.waitReady(ready)
		if !ok {
			c.t.Fatalf("kill %d: the child exited before it was ready", i)
		}
		if warn != "" {
			// Not silent: status says the log was not checked against
			// its head. Counted, and reported by the test.
			t.Logf("kill %d: %s", i, warn)
			unchecked++
		}
		switch {
		case pending != "" && brk == "" && warn != "":
			uncheckedTampers++
			late = true // a later start may still find it
		case pending == "" && brk != "" && late:
			late = false
			breaks++
			uncheckedTampers--
		case pending != "" && brk == "":
			files, _ := audit.SetFiles(path)
			t.Fatalf("kill %d: tamper %q was not reported at start (head now %+v, files %v)", i, pending, c.head(), files)
		case pending == "" && brk != "":
			t.Fatalf("kill %d: a crash was reported as a break: %s", i, brk)
		case brk != "":
			breaks++
		}
		pending = ""
		time.Sleep(time.Duration(rng.IntN(80000)) * time.Microsecond)
		c.kill(cmd)
		if tamper && rng.IntN(3) == 0 {
			if h := c.head(); older != nil && rng.IntN(4) == 0 && lastSeqOf(older) > 0 && lastSeqOf(older) < h.Seq && headInFile(path, h) {
				// Only a copy older than the head, over a file that holds
				// the head's record: a copy that merely lacks records the
				// head never reached looks like a crash, and so does an
				// empty file put back right after a rotation.
				os.WriteFile(path, older, 0o600)
				pending = fmt.Sprintf("older copy (to seq %d, head %d)", lastSeqOf(older), c.head().Seq)
			} else {
				pending = tamperOnce(t, path, c.head(), rng)
			}
			if pending != "" {
				tampers++
			}
		} else if b, err := os.ReadFile(path); err == nil && rng.IntN(4) == 0 {
			older = b
		}
	}
	cmd, ready := c.start()
	brk, warn, _ := c.waitReady(ready)
	c.kill(cmd)
	switch {
	case pending != "" && brk == "" && warn != "":
		uncheckedTampers++
	case pending != "" && brk == "":
		t.Fatalf("the last tamper %q was not reported", pending)
	case pending != "":
		breaks++
	}
	t.Logf("%s: %d kills (%d during start), %d tampers, %d breaks reported, %d starts could not read the head (%d of them after a tamper)",
		backend, kills, early, tampers, breaks, unchecked, uncheckedTampers)
	if !tamper {
		if brk != "" {
			t.Fatalf("a crash was reported as a break: %s", brk)
		}
		files, _ := audit.SetFiles(path)
		h := c.head()
		if h.Seq == 0 {
			t.Fatal("no head in the keychain after the loop")
		}
		rep, err := audit.Verify(files, audit.VerifyOptions{Head: &h, JWKS: crashJWKS()})
		if err != nil || rep.Problem != nil || rep.First != 1 {
			t.Fatalf("the chain does not verify: %v %v (first %d)", err, rep.Problem, rep.First)
		}
		t.Logf("the chain verifies: %d records in %d files, %d checkpoints", rep.Records, len(files), rep.Checkpoints)
		return
	}
	if tampers != breaks+uncheckedTampers {
		t.Fatalf("%d tampers, %d breaks", tampers, breaks)
	}
}

// tamperOnce changes the current file so that a record the head vouches
// for is lost or altered; "" when the file holds none.
func tamperOnce(t *testing.T, path string, h audit.Head, rng *rand.Rand) string {
	ls, err := audit.ReadLines(path)
	if err != nil || len(ls) == 0 || ls[0].Rec == nil || ls[0].Rec.Seq > h.Seq {
		return ""
	}
	upto := int(h.Seq - ls[0].Rec.Seq) // index of the head's record
	if upto >= len(ls) {
		return ""
	}
	b, _ := os.ReadFile(path)
	offset := func(i int) int { // start of line i
		n := 0
		for _, l := range ls[:i] {
			n += len(l.Raw) + 1
		}
		return n
	}
	switch rng.IntN(3) {
	case 0: // cut the tail, the head's record included
		cut := upto - rng.IntN(min(upto, 3)+1)
		os.WriteFile(path, b[:offset(cut)], 0o600)
		return "cut tail"
	case 1: // one byte of an acknowledged record
		i := rng.IntN(upto + 1)
		at := offset(i) + bytes.Index(ls[i].Raw, []byte(`"time":"`)) + 9
		b[at] ^= 1
		os.WriteFile(path, b, 0o600)
		return "byte changed"
	default: // one acknowledged record deleted
		i := rng.IntN(upto + 1)
		os.WriteFile(path, append(b[:offset(i):offset(i)], b[offset(i+1):]...), 0o600)
		return "line deleted"
	}
}

func crashJWKS() *jose.JSONWebKeySet {
	priv := ed25519.NewKeyFromSeed(crashSeed)
	return &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv.Public(), KeyID: "crash", Algorithm: "EdDSA"}}}
}

// lastSeqOf is the seq of the last complete record in b.
func lastSeqOf(b []byte) int64 {
	var seq int64
	audit.EachLine(bytes.NewReader(b), func(l audit.Line) bool {
		if l.Rec != nil && !l.Torn {
			seq = l.Rec.Seq
		}
		return true
	})
	return seq
}

// headInFile reports whether the file holds the head's record.
func headInFile(path string, h audit.Head) bool {
	ls, err := audit.ReadLines(path)
	if err != nil || len(ls) == 0 || ls[0].Rec == nil {
		return false
	}
	return ls[0].Rec.Seq <= h.Seq
}
