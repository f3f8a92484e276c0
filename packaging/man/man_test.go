package man

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the committed man pages")

// compare fails when the committed page differs from the generated one;
// with -update it rewrites it.
func compare(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./packaging/man -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is out of date with its source: go test ./packaging/man ./cmd/stepupctl-inspect -run Man -update", path)
	}
}

func TestManAgentPageUpToDate(t *testing.T) {
	md, err := os.ReadFile("stepup-agent.1.md")
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "stepup-agent.1", Agent(md))
}

func TestManPolicyPageUpToDate(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "stepup-policy.5", Policy(md))
}

// TestManAgentPageNamesEveryFlag keeps stepup-agent(1) from drifting from
// the daemon: every flag its --help lists is documented on the page.
func TestManAgentPageNamesEveryFlag(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "stepup-agent")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/stepup-agent")
	build.Dir = testenv.RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	help, _ := exec.CommandContext(ctx, bin, "-help").CombinedOutput()
	md, err := os.ReadFile("stepup-agent.1.md")
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(string(help), -1)
	if len(flags) < 5 {
		t.Fatalf("found %d flags in stepup-agent -help:\n%s", len(flags), help)
	}
	for _, f := range flags {
		name := f[1]
		if name == "internal-child" {
			continue
		}
		dash := "-"
		if len(name) > 1 {
			dash = "--"
		}
		if !strings.Contains(string(md), "**"+dash+name+"**") {
			t.Errorf("stepup-agent -help lists -%s, stepup-agent.1.md does not document **%s%s**", name, dash, name)
		}
	}
}

// TestManRenders renders every committed page with man -l, the way a user
// reads them, and checks groff has no complaint (no table wider than the line) and the NAME is there.
func TestManRenders(t *testing.T) {
	man := testenv.Program(t, "man")
	pages, _ := filepath.Glob("*.[15]")
	names := map[string]bool{}
	for _, p := range pages {
		names[p] = true
	}
	for _, want := range []string{"stepup-agent.1", "stepupctl.1", "stepup-policy.5"} {
		if !names[want] {
			t.Errorf("%s is missing", want)
		}
	}
	for _, p := range pages {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, man, "-l", p)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80", "LC_ALL=C.UTF-8")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", p, err, stderr.String())
			continue
		}
		if !strings.Contains(stdout.String(), "NAME") || stdout.Len() < 200 {
			t.Errorf("man -l %s rendered %d bytes:\n%s", p, stdout.Len(), stdout.String())
		}
	}
}
