package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func unixTime(s int64) time.Time { return time.Unix(s, 0) }

func (a *App) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's state: keychain, policy, tokens held (never their values)",
		Args:  ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.Client.Status(cmd.Context())
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(s)
			}
			w := a.Stdout
			if s.PID != 0 {
				fmt.Fprintf(w, "stepup-agent %s, pid %d\n", s.Version, s.PID)
			} else {
				fmt.Fprintf(w, "stepup-agent %s\n", s.Version)
			}
			if s.Remote != "" {
				fmt.Fprintf(w, "remote:      a forwarded agent, reached through %s on its machine (docs/remote.md)\n", s.Remote)
			}
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
			switch {
			case s.Remote != "" && s.Policy.Builtin:
				src = "the workstation's built-in defaults"
			case s.Remote != "":
				src = "the workstation's policy file"
			case s.Policy.Builtin:
				src = "built-in defaults (no file at " + s.Policy.Path + ")"
			}
			loaded := "never loaded"
			if !s.Policy.LoadedAt.IsZero() {
				loaded = "loaded " + s.Policy.LoadedAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(w, "policy:      %s, %s\n", src, loaded)
			if s.Policy.Error != "" {
				for _, e := range policyErrors(s.Policy.Error, s.Policy.Path) {
					fmt.Fprintf(w, "             ERROR: %s\n", e)
				}
				if !s.Policy.LoadedAt.IsZero() {
					fmt.Fprintln(w, "             (the last good policy stays in force)")
				}
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
				fmt.Fprintf(w, "%s %s  %s, %s, until %s", label, t.Scope, useKind(t.SingleUse), t.Method, when(t.ExpiresAt))
				if t.BoundTo != "" {
					fmt.Fprintf(w, ", bound to %s", t.BoundTo)
				}
				if t.Details {
					fmt.Fprint(w, ", for one action")
				}
				if t.KeyBound {
					fmt.Fprint(w, ", key-bound (DPoP)")
				}
				fmt.Fprintln(w)
			}
			return nil
		},
	}
}

// policyErrors splits the policy's error ("PATH: line 3: ...; line 5:
// ...") into one error a line, without the path status names already.
func policyErrors(msg, path string) []string {
	msg = strings.TrimPrefix(msg, path+": ")
	parts := strings.Split(msg, "; line ")
	for i := 1; i < len(parts); i++ {
		parts[i] = "line " + parts[i]
	}
	return parts
}

// warnIfNotPersistent warns on stderr, before an enrollment, when the
// agent's keychain would not keep the credential across a restart.
func (a *App) warnIfNotPersistent(ctx context.Context) {
	s, err := a.Client.Status(ctx)
	if err != nil {
		return // enrollStart reports the agent's state
	}
	switch {
	case s.Keychain.Backend == "memory":
		fmt.Fprintln(a.Stderr, "stepupctl: warning: the agent keeps credentials in memory (--keychain memory): this credential is lost when the agent stops")
		fmt.Fprintln(a.Stderr, "hint: start the agent with --keychain auto (the system keychain, else a 0600 file) to keep it")
	case !s.Keychain.Available:
		fmt.Fprintf(a.Stderr, "stepupctl: warning: the agent's keychain (%s) is not answering: this credential is kept in memory until it is back, and lost if the agent stops first\n", s.Keychain.Backend)
	}
}
