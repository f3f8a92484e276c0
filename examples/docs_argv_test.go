package examples_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// tokenOnArgv matches commands that put an elevated token on a program's
// command line, where every local user can read it (/proc/PID/cmdline):
// a header given as an argument with the token expanded into it, and
// stepupctl verify with the token as its argument.
var tokenOnArgv = []*regexp.Regexp{
	regexp.MustCompile(`-H\s*["']?(X-Elevated-Token|Authorization):[^"'\n]*\$`),
	regexp.MustCompile(`--header[= ]["']?(X-Elevated-Token|Authorization):[^"'\n]*\$`),
	regexp.MustCompile(`stepupctl verify\s+["']?\$`),
}

// Issue 11 item 6, as a class: no command shown in the documents (README,
// docs/, the clients' READMEs) puts a token on a command line. Prose may
// name the wrong way to warn against it; code blocks (fenced or indented)
// may not use it.
func TestNoDocumentPutsATokenOnACommandLine(t *testing.T) {
	root := testenv.RepoRoot(t)
	files := []string{filepath.Join(root, "README.md")}
	for _, g := range []string{"docs/*.md", "clients/*/README.md", "examples/*/README.md"} {
		m, _ := filepath.Glob(filepath.Join(root, g))
		files = append(files, m...)
	}
	checked := 0
	for _, f := range files {
		fd, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fd)
		fenced := false
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				fenced = !fenced
				continue
			}
			if !fenced && !strings.HasPrefix(line, "    ") && !strings.HasPrefix(line, "\t") {
				continue
			}
			checked++
			for _, re := range tokenOnArgv {
				if re.MatchString(line) {
					rel, _ := filepath.Rel(root, f)
					t.Errorf("%s:%d puts a token on a command line: %s\n(pipe it: curl -H @-, stepupctl verify -)", rel, n, strings.TrimSpace(line))
				}
			}
		}
		fd.Close()
	}
	if checked < 100 {
		t.Fatalf("only %d code lines found in %d documents: the scan is broken", checked, len(files))
	}
}
