package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func unixTime(s int64) time.Time { return time.Unix(s, 0) }

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's state: keychain, policy, tokens held (never their values)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.client.Status(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(s)
			}
			w := a.stdout
			fmt.Fprintf(w, "stepup-agent %s, pid %d\n", s.Version, s.PID)
			if s.Socket != "" {
				fmt.Fprintf(w, "socket:      %s\n", s.Socket)
			}
			avail := "available"
			if !s.Keychain.Available {
				avail = "NOT available (serving from memory)"
			}
			fmt.Fprintf(w, "keychain:    %s, %s\n", s.Keychain.Backend, avail)
			if s.Keychain.Warning != "" {
				fmt.Fprintf(w, "             warning: %s\n", s.Keychain.Warning)
			}
			src := s.Policy.Path
			if s.Policy.Builtin {
				src = "built-in defaults (no file at " + s.Policy.Path + ")"
			}
			fmt.Fprintf(w, "policy:      %s, loaded %s\n", src, s.Policy.LoadedAt.Local().Format(time.DateTime))
			if s.Policy.Error != "" {
				fmt.Fprintf(w, "             ERROR: %s\n             (the last good policy stays in force)\n", s.Policy.Error)
			}
			if s.Audit != nil {
				fmt.Fprintf(w, "audit log:   %s, seq %d\n", s.Audit.File, s.Audit.Seq)
				if s.Audit.Break != "" {
					fmt.Fprintf(w, "             BREAK: %s\n             (stepupctl audit verify names the first bad seq)\n", s.Audit.Break)
				}
				if s.Audit.Warning != "" {
					fmt.Fprintf(w, "             warning: %s\n", s.Audit.Warning)
				}
			}
			if s.Prompter != "" {
				fmt.Fprintf(w, "prompter:    %s\n", s.Prompter)
			}
			if s.Locked {
				fmt.Fprintln(w, "locked:      yes (stepupctl unlock)")
			}
			fmt.Fprintf(w, "credentials: %d\n", s.Credentials)
			if len(s.Tokens) == 0 {
				fmt.Fprintln(w, "tokens:      none")
			}
			for i, t := range s.Tokens {
				label := "tokens:     "
				if i > 0 {
					label = "            "
				}
				fmt.Fprintf(w, "%s %s  %s, %s, until %s\n", label, t.Scope, useKind(t.SingleUse), t.Method, when(t.ExpiresAt))
			}
			return nil
		},
	}
}
