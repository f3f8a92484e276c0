// Package man makes the manual pages of the Debian package from one source
// each: stepupctl's pages from its cobra commands (their Use, Short, Long
// and flags, cobra/doc), stepup-agent(1) from stepup-agent.1.md beside this
// file, and stepup-policy(5) from docs/policy.md, both through go-md2man.
// The roff files are committed next to their sources; the tests regenerate
// them and fail on any difference, and `go test ./packaging/man
// ./cmd/stepupctl-inspect -run Man -update` rewrites them (the whole
// tree of stepupctl's verbs is stepupctl-inspect's).
package man

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Source is the header every page carries: no date, so that a page changes
// only when its text does.
const Source = "stepup-agent"

// Cobra writes one page per command of root (stepupctl.1,
// stepupctl-check.1, ...) into dir.
func Cobra(root *cobra.Command, dir string) error {
	root.DisableAutoGenTag = true
	root.InitDefaultCompletionCmd() // cobra adds it at Execute; the pages list it too
	epoch := time.Unix(0, 0).UTC()
	header := &doc.GenManHeader{Title: "STEPUPCTL", Section: "1", Source: Source, Manual: "User Commands", Date: &epoch}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("cobra man pages: %w", err)
	}
	// cobra writes the date it is given; an empty field keeps the pages
	// free of one.
	entries, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		return err
	}
	for _, p := range entries {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b = bytes.Replace(b, []byte(`"Jan 1970"`), []byte(`""`), 1)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Agent converts stepup-agent.1.md (its own title line included).
func Agent(md []byte) []byte { return render(md) }

// tableFormat is the column format of a table go-md2man writes: every
// column "l", which never wraps.
var tableFormat = regexp.MustCompile(`(?m)^(?:l )*l ?\.?$`)

// render converts Markdown to roff and makes every table fit an 80-column
// terminal: go-md2man puts only some long cells in text blocks (T{ T}) and
// marks no column as expandable, so tbl sets them on one line however long.
func render(md []byte) []byte {
	lines := strings.Split(string(md2man.Render(md)), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		if lines[i] != ".TS" {
			out = append(out, lines[i])
			continue
		}
		// .TS, the options, the format lines, the rows, .TE.
		out = append(out, lines[i])
		i++
		for ; i < len(lines) && lines[i] != ".TE"; i++ {
			if tableFormat.MatchString(lines[i]) {
				out = append(out, strings.ReplaceAll(lines[i], "l", "lx"))
				continue
			}
			if strings.HasSuffix(lines[i], ";") {
				out = append(out, lines[i])
				continue
			}
			var cells []string
			cells, i = tableRow(lines, i)
			for c, cell := range cells {
				if !strings.HasPrefix(cell, `\fB`) || !strings.HasSuffix(cell, `\fP`) {
					cells[c] = "T{\n.na\n" + cell + "\nT}" // .na: no justification in a narrow cell
				}
			}
			out = append(out, strings.Join(cells, "\t"))
		}
		if i < len(lines) {
			out = append(out, lines[i])
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// tableRow reads the row that starts at lines[i]: cells separated by tabs,
// a cell in T{ ... T} spanning lines. It returns the cells' text and the
// index of the row's last line.
func tableRow(lines []string, i int) ([]string, int) {
	var cells []string
	rest := lines[i]
	for {
		cell, after, more := strings.Cut(rest, "\t")
		if cell != "T{" {
			cells = append(cells, cell)
			if !more {
				return cells, i
			}
			rest = after
			continue
		}
		var text []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "T}"); i++ {
			text = append(text, lines[i])
		}
		cells = append(cells, strings.Join(text, "\n"))
		if i >= len(lines) {
			return cells, i
		}
		rest = strings.TrimPrefix(lines[i], "T}")
		if !strings.HasPrefix(rest, "\t") {
			return cells, i
		}
		rest = rest[1:]
	}
}

var firstHeading = regexp.MustCompile(`(?m)\A# .*\n`)

// Policy turns docs/policy.md into stepup-policy(5): a title and NAME
// section before it, its own first heading becoming DESCRIPTION.
func Policy(policyMD []byte) []byte {
	var b bytes.Buffer
	b.WriteString("# STEPUP-POLICY 5 \"\" \"" + Source + "\" \"File Formats\"\n\n")
	b.WriteString("# NAME\n\nstepup-policy - the policy file of stepup-agent (~/.config/stepup/policy.yaml)\n\n")
	b.WriteString("# DESCRIPTION\n\n")
	b.Write(firstHeading.ReplaceAll(policyMD, nil))
	b.WriteString("\n# SEE ALSO\n\nstepup-agent(1), stepupctl(1)\n")
	return render(b.Bytes())
}
