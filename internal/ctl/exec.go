package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func (a *App) execCmd() *cobra.Command {
	var scope string
	var f promptFlags
	cmd := &cobra.Command{
		Use:   "exec --scope SCOPE -- CMD [ARGS...]",
		Short: "Step up for SCOPE if needed, then run CMD with the token in STEPUP_TOKEN",
		Args:  minArgs(1, "a command to run after --"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" {
				return UsageError{errors.New("exec needs --scope"), cmd.CommandPath()}
			}
			t, err := a.tokenFor(cmd.Context(), scope, &f, false)
			if err != nil {
				return err
			}
			c := exec.Command(args[0], args[1:]...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, a.Stdout, a.Stderr
			if r, ok := a.Stdin.(*os.File); ok {
				c.Stdin = r
			}
			c.Env = append(os.Environ(), "STEPUP_TOKEN="+t.Token, "STEPUP_SCOPE="+scope)
			// The child gets the terminal's signals; stepupctl waits.
			signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
			defer signal.Reset(syscall.SIGINT, syscall.SIGQUIT)
			if err := c.Run(); err != nil {
				// As a shell does: 127 not found, 126 found but not run.
				if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintf(a.Stderr, "stepupctl: %s: command not found\n", args[0])
					return ExitCode(127)
				}
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
						return ExitCode(128 + int(st.Signal()))
					}
					return ExitCode(ee.ExitCode())
				}
				fmt.Fprintf(a.Stderr, "stepupctl: cannot run %s: %v\n", args[0], err)
				return ExitCode(126)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "the scope CMD needs")
	f.add(cmd)
	f.details.add(cmd)
	return cmd
}
