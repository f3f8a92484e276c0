// Command stepupctl-inspect is the whole of stepupctl: its verbs, and
// the ones that read this machine's files and services, which stepupctl
// hands to it. audit reads and verifies the audit log, doctor checks the
// setup, and shell completion offers the policy's scopes. Run them
// through stepupctl (`stepupctl doctor`), which finds this program next
// to it; see internal/ctl.
package main

import (
	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/internal/ctl"
)

func main() { ctl.Main(extension) }

// extension adds this program's verbs and completions to the CLI.
var extension = &ctl.Extension{
	Verbs: map[string]func(*ctl.App) *cobra.Command{
		"audit":  func(c *ctl.App) *cobra.Command { return (&app{c}).auditCmd() },
		"doctor": func(c *ctl.App) *cobra.Command { return (&app{c}).doctorCmd() },
	},
	Complete: func(c *ctl.App, root *cobra.Command) { (&app{c}).wireCompletion(root) },
}

// app is the invocation, with this program's verbs as its methods.
type app struct{ *ctl.App }

// short is the summary of one of ctl.InspectVerbs, which stepupctl's
// --help shows too.
func short(verb string) string {
	for _, v := range ctl.InspectVerbs {
		if v.Name == verb {
			return v.Short
		}
	}
	panic("stepupctl-inspect: " + verb + " is not in ctl.InspectVerbs")
}
