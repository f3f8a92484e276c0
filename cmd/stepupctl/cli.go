package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// exitCode carries a non-zero exit code that needs no message.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// app is one invocation: its streams, flags and client.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	json           bool
	socket         string
	client         *stepup.Client
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd(args)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ec exitCode
	if !errors.As(err, &ec) {
		a.printError(err)
	}
	return exitFor(err)
}

func (a *app) rootCmd(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "stepupctl",
		Short: "Talk to stepup-agent: check, step up, get and verify elevated tokens",
		Long: `stepupctl talks to stepup-agent over its socket ($STEPUP_AUTH_SOCK).

A session:
  eval "$(stepup-agent)"            # start the agent
  stepupctl enroll totp             # scan the QR code with an authenticator app
  stepupctl check wallet:export     # exit 1: step-up needed
  stepupctl prompt wallet:export    # verify; the agent mints a token
  stepupctl exec --scope wallet:export -- ./export.sh   # STEPUP_TOKEN is set`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for stepupctl", args[0]), "stepupctl"}
			}
			return nil
		},
		// No verb: the usage, on stderr, and exit 2.
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprint(a.stderr, cmd.UsageString())
			return exitCode(exitUsage)
		},
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			a.client = &stepup.Client{Socket: a.socket, Serial: true}
		},
	}
	root.SetVersionTemplate("stepupctl {{.Version}}\n")
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print JSON for scripts")
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "the agent's socket (default $STEPUP_AUTH_SOCK or the default path)")
	verbs := []struct {
		name string
		make func() *cobra.Command
	}{
		{"check", a.checkCmd}, {"prompt", a.promptCmd}, {"token", a.tokenCmd}, {"verify", a.verifyCmd},
		{"reset", a.resetCmd}, {"status", a.statusCmd}, {"jwks", a.jwksCmd}, {"enroll", a.enrollCmd},
		{"credentials", a.credentialsCmd}, {"exec", a.execCmd}, {"lock", a.lockCmd}, {"unlock", a.unlockCmd},
		{"audit", a.auditCmd}, {"doctor", a.doctorCmd},
	}
	// A run that names its verb first builds that verb alone: building
	// all fourteen, with their flags, was a tenth of `stepupctl check`.
	// Help, completion and anything else get the whole tree.
	only := ""
	if len(args) > 0 {
		for _, v := range verbs {
			if v.name == args[0] {
				only = v.name
			}
		}
	}
	for _, v := range verbs {
		if only == "" || v.name == only {
			root.AddCommand(v.make())
		}
	}
	if only != "" {
		root.CompletionOptions.DisableDefaultCmd = true
	}
	a.wireCompletion(root)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%v", err), cmd.CommandPath()}
	})
	return root
}

type usageError struct {
	err error
	cmd string
}

func (u usageError) Error() string { return u.err.Error() }

// printError writes "stepupctl: what happened" and a "hint:" line saying
// what to do.
func (a *app) printError(err error) {
	var de *stepup.DialError
	var ae *api.Error
	var ue usageError
	switch {
	case errors.As(err, &de):
		fmt.Fprintf(a.stderr, "stepupctl: %v\n", de)
		fmt.Fprintf(a.stderr, "hint: %s\n", de.Hint())
	case errors.As(err, &ae):
		fmt.Fprintf(a.stderr, "stepupctl: %s\n", cliHint(ae.Message))
		if ae.Data.RetryAfterSeconds > 0 && !strings.Contains(ae.Message, "try again in") {
			fmt.Fprintf(a.stderr, "stepupctl: retry after %ds\n", ae.Data.RetryAfterSeconds)
		}
		if ae.Data.Hint != "" {
			fmt.Fprintf(a.stderr, "hint: %s\n", cliHint(ae.Data.Hint))
		}
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "stepupctl: %v\n", ue.err)
		fmt.Fprintf(a.stderr, "hint: see %s --help\n", ue.cmd)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(a.stderr, "stepupctl: interrupted")
	default:
		fmt.Fprintf(a.stderr, "stepupctl: %v\n", err)
		if strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)") {
			fmt.Fprintln(a.stderr, "hint: see stepupctl --help")
		}
	}
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// when formats a time for people: the local clock and how far away.
func when(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	if d < 0 {
		return t.Local().Format("15:04:05") + " (expired)"
	}
	return fmt.Sprintf("%s (in %s)", t.Local().Format("15:04:05"), d)
}

func useKind(single bool) string {
	if single {
		return "single-use"
	}
	return "multi-use"
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %s", cmd.Name(), what), cmd.CommandPath()}
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("%s takes %s", cmd.Name(), what), cmd.CommandPath()}
		}
		return nil
	}
}
