package ctl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
)

func (a *App) lockCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lock",
		Short: "Revoke every token and refuse prompts until unlock",
		Args:  ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.Client.Lock(cmd.Context()); err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(api.LockResult{Locked: true})
			}
			fmt.Fprintln(a.Stdout, "locked: every token revoked; prompts are refused until stepupctl unlock")
			return nil
		},
	}
}

func (a *App) unlockCmd() *cobra.Command {
	var f promptFlags
	cmd := &cobra.Command{
		Use:   "unlock",
		Short: "Verify the user and unlock the agent",
		Args:  ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var err error
			if f.stdin {
				_, err = a.stepUpHere(ctx, nil, &f, "unlock")
			} else {
				err = a.Client.Unlock(ctx, promptOptions(nil, &f))
				if errors.Is(err, api.ErrNoPrompter) && haveTTY() {
					_, err = a.stepUpHere(ctx, nil, &f, "unlock")
				}
			}
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(api.LockResult{Locked: false})
			}
			fmt.Fprintln(a.Stdout, "unlocked")
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
