package ctl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
)

func (a *App) credentialsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "List enrolled credentials (credentials remove ID removes one)",
		Args:  ExactArgs(0, "no arguments (or: credentials remove ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			creds, err := a.Client.ListCredentials(cmd.Context())
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(api.ListCredentialsResult{Credentials: creds})
			}
			if len(creds) == 0 {
				fmt.Fprintln(a.Stdout, "no credentials enrolled (stepupctl enroll totp)")
				return nil
			}
			for _, c := range creds {
				fmt.Fprintf(a.Stdout, "%-28s %-14s %-20s added %s", c.ID, c.Method, c.Label, c.CreatedAt.Local().Format("2006-01-02 15:04"))
				if c.Remaining != nil {
					fmt.Fprintf(a.Stdout, ", %d left", *c.Remaining)
				}
				fmt.Fprintln(a.Stdout)
			}
			return nil
		},
	}
	var f promptFlags
	rm := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a credential (needs a step-up for credential:unlink, asked for first)",
		Args:  ExactArgs(1, "one credential ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			err := a.Client.RemoveCredential(ctx, args[0])
			var ae *api.Error
			if errors.As(err, &ae) && ae.Code == api.CodeForbidden && ae.Data.RequiredScope != "" {
				fmt.Fprintf(a.Stderr, "Removing a credential needs a step-up for %s first.\n", ae.Data.RequiredScope)
				if _, err := a.stepUp(ctx, []string{ae.Data.RequiredScope}, &f); err != nil {
					return err
				}
				err = a.Client.RemoveCredential(ctx, args[0])
			}
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(api.RemoveCredentialResult{Removed: true})
			}
			fmt.Fprintf(a.Stdout, "removed %s\n", args[0])
			return nil
		},
	}
	f.add(rm)
	cmd.AddCommand(rm)
	return cmd
}
