//go:build linux

package main

import (
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// The short versions of the load and chaos runs (docs/RELIABILITY.md), so
// that they cannot rot: seconds, not minutes. Each builds the agent of
// this tree and fails on any wrong answer or violation.

func TestLoadShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an agent")
	}
	if err := loadMain([]string{"-conns", "8", "-n", "4000", "-pipeline", "4", "-slow", "4", "-slow-every", "200ms"}); err != nil {
		t.Fatal(err)
	}
}

func TestChaosShortFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an agent")
	}
	if err := chaosMain([]string{"-kills", "5", "-keychain", "file", "-max-delay", "300ms"}); err != nil {
		t.Fatal(err)
	}
}

func TestChaosShortSecretService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an agent")
	}
	if os.Getenv("STEPUP_TEST_SECRET_SERVICE") == "" {
		testenv.Missing(t, "no Secret Service (run through scripts/test.sh, which starts gnome-keyring)")
	}
	// A private gnome-keyring: the session's may hold another agent's
	// items (an audit head of another log reads as a chain break).
	if err := chaosMain([]string{"-kills", "5", "-keychain", "secretservice", "-own-keyring", "-max-delay", "300ms"}); err != nil {
		t.Fatal(err)
	}
}

// TestFuzzShort: scripts/fuzz.sh (the long fuzz runs) finds every fuzz
// target of the tree in its package, and runs one for a few hundred
// inputs. The seed corpora themselves run in every package's go test.
func TestFuzzShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an instrumented test binary")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "fuzz.sh")

	// Every func FuzzX(f *testing.F) in a _test.go file, by package.
	want := map[string]string{}
	decl := regexp.MustCompile(`(?m)^func (Fuzz\w*)\(\w+ \*testing\.F\)`)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range decl.FindAllSubmatch(b, -1) {
			want[string(m[1])] = filepath.ToSlash(rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		t.Fatal("no fuzz targets found in the tree")
	}
	list := exec.Command(script, "1s")
	list.Env = append(os.Environ(), "FUZZ_LIST=1")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("FUZZ_LIST=1 %s: %v", script, err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, dir, _ := strings.Cut(line, " ")
		got[name] = dir
	}
	if !maps.Equal(got, want) {
		t.Fatalf("scripts/fuzz.sh lists\n%v\nthe tree has\n%v", got, want)
	}

	run := exec.Command(script, "300x", "FuzzCleanText")
	run.Env = append(os.Environ(), "FUZZ_LOGDIR="+t.TempDir())
	out, err = run.CombinedOutput()
	if err != nil {
		t.Fatalf("%s 300x FuzzCleanText: %v\n%s", script, err, out)
	}
	if !regexp.MustCompile(`(?m)^FuzzCleanText +prompt .* ok$`).Match(out) {
		t.Fatalf("no ok line for FuzzCleanText in\n%s", out)
	}
}
