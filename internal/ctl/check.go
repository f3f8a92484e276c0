package ctl

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

func (a *App) checkCmd() *cobra.Command {
	var d detailFlags
	cmd := &cobra.Command{
		Use:   "check SCOPE",
		Short: "Exit 0 when SCOPE needs no step-up now, 1 when it does",
		Args:  ExactArgs(1, "one scope, e.g. wallet:export"),
		RunE: func(cmd *cobra.Command, args []string) error {
			details, err := d.raw()
			if err != nil {
				return err
			}
			q := stepup.Query{Scope: args[0]}
			if details != nil {
				q.AuthorizationDetails = details
			}
			r, err := a.Client.CheckStepUpFor(cmd.Context(), q)
			if err != nil {
				return err
			}
			if a.JSON {
				a.PrintJSON(r)
			} else if r.Required && r.Locked {
				fmt.Fprintf(a.Stdout, "%s: step-up required: the agent is locked (stepupctl unlock)\n", r.Scope)
			} else if r.Required {
				fmt.Fprintf(a.Stdout, "%s: step-up required", r.Scope)
				if len(r.Methods) > 0 {
					fmt.Fprintf(a.Stdout, " (methods: %s)", strings.Join(r.Methods, ", "))
				}
				fmt.Fprintln(a.Stdout)
			} else if r.ExpiresAt != nil {
				fmt.Fprintf(a.Stdout, "%s: no step-up needed; token valid until %s\n", r.Scope, when(*r.ExpiresAt))
			} else {
				fmt.Fprintf(a.Stdout, "%s: no step-up needed (policy)\n", r.Scope)
			}
			if r.Required {
				return ExitCode(ExitRequired)
			}
			return nil
		},
	}
	d.add(cmd)
	return cmd
}
