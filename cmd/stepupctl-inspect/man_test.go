package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/ctl"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/packaging/man"
)

var updateMan = flag.Bool("update", false, "rewrite the committed man pages in packaging/man")

// TestManPagesUpToDate regenerates stepupctl's man pages from its cobra
// commands and fails when the committed ones in packaging/man differ: a
// new verb or flag must come with its page.
func TestManPagesUpToDate(t *testing.T) {
	dir := t.TempDir()
	if err := man.Cobra(ctl.Root(extension), dir); err != nil {
		t.Fatal(err)
	}
	committed := filepath.Join(testenv.RepoRoot(t), "packaging", "man")
	got, _ := filepath.Glob(filepath.Join(dir, "stepupctl*.1"))
	if len(got) < 10 {
		t.Fatalf("generated %d pages", len(got))
	}
	if *updateMan {
		old, _ := filepath.Glob(filepath.Join(committed, "stepupctl*.1"))
		for _, p := range old {
			os.Remove(p)
		}
	}
	seen := map[string]bool{}
	for _, p := range got {
		name := filepath.Base(p)
		seen[name] = true
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(committed, name)
		if *updateMan {
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("packaging/man/%s is missing or out of date: go test ./cmd/stepupctl-inspect ./packaging/man -run Man -update", name)
		}
	}
	old, _ := filepath.Glob(filepath.Join(committed, "stepupctl*.1"))
	for _, p := range old {
		if !seen[filepath.Base(p)] {
			t.Errorf("packaging/man/%s has no command any more: go test ./cmd/stepupctl-inspect -run Man -update", filepath.Base(p))
		}
	}
}
