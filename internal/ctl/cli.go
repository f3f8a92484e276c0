package ctl

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

// ExitCode carries a non-zero exit code that needs no message.
type ExitCode int

func (e ExitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// App is one invocation: its streams, flags and client. Verbs built
// outside this package (stepupctl-inspect's) write through it.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	JSON           bool   // --json
	Socket         string // --socket
	Client         *stepup.Client
	// HandedOffBy is the version of the stepupctl that handed this run
	// over (to stepupctl-inspect, as meant), or "" when none did.
	HandedOffBy string

	// args are the command line after the program name, handed on
	// unchanged when a verb runs in stepupctl-inspect; ext builds those
	// verbs when this program is stepupctl-inspect.
	args    []string
	ext     *Extension
	pending error // a failure where cobra takes none (a help function)
}

// run runs one command line (args without the program name) and returns
// its exit code. ext is nil in stepupctl: the verbs in InspectVerbs and
// shell completion's answers then run in stepupctl-inspect, which
// replaces this process (with the real standard streams, not stdin,
// stdout and stderr). by is the version of the stepupctl that handed
// the run over, or "".
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, ext *Extension, by string) int {
	a := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr, HandedOffBy: by, args: args, ext: ext}
	if ext == nil && len(args) > 0 && runsElsewhere(args[0]) {
		return a.fail(a.execInspect())
	}
	root := a.rootCmd(args)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		err = a.pending
	}
	return a.fail(err)
}

// fail prints err, unless it is a bare exit code, and returns its exit
// code.
func (a *App) fail(err error) int {
	if err == nil {
		return ExitOK
	}
	var ec ExitCode
	if !errors.As(err, &ec) {
		a.PrintError(err)
	}
	return exitFor(err)
}

// Root is the command tree with ext's verbs (stepupctl-inspect's, from
// which the man pages are made), or with stand-ins for them (nil:
// stepupctl's).
func Root(ext *Extension) *cobra.Command {
	a := &App{ext: ext}
	return a.rootCmd(nil)
}

func (a *App) rootCmd(args []string) *cobra.Command {
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
		Version:       Version,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return UsageError{fmt.Errorf("unknown command %q for stepupctl", args[0]), "stepupctl"}
			}
			return nil
		},
		// No verb: the usage, on stderr, and exit 2.
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprint(a.Stderr, cmd.UsageString())
			return ExitCode(ExitUsage)
		},
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			a.Client = &stepup.Client{Socket: a.Socket, Serial: true}
		},
	}
	root.SetVersionTemplate("stepupctl {{.Version}}\n")
	root.PersistentFlags().BoolVar(&a.JSON, "json", false, "print JSON for scripts")
	root.PersistentFlags().StringVar(&a.Socket, "socket", "", "the agent's socket (default $STEPUP_AUTH_SOCK or the default path)")
	type verb struct {
		name string
		make func() *cobra.Command
	}
	verbs := []verb{
		{"check", a.checkCmd}, {"prompt", a.promptCmd}, {"token", a.tokenCmd}, {"verify", a.verifyCmd},
		{"reset", a.resetCmd}, {"status", a.statusCmd}, {"jwks", a.jwksCmd}, {"enroll", a.enrollCmd},
		{"credentials", a.credentialsCmd}, {"exec", a.execCmd}, {"lock", a.lockCmd}, {"unlock", a.unlockCmd},
	}
	for _, v := range InspectVerbs {
		build := func() *cobra.Command { return a.inspectStub(v) }
		if a.ext != nil {
			build = func() *cobra.Command { return a.ext.Verbs[v.Name](a) }
		}
		verbs = append(verbs, verb{v.Name, build})
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
	if a.ext != nil && a.ext.Complete != nil {
		a.ext.Complete(a, root)
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return UsageError{fmt.Errorf("%v", err), cmd.CommandPath()}
	})
	return root
}

// UsageError is a bad command line: exit 2, and a hint to see Cmd's
// --help.
type UsageError struct {
	Err error
	Cmd string // the command path, as "stepupctl audit verify"
}

func (u UsageError) Error() string { return u.Err.Error() }

// hinted is an error that says what to do about it: no agent to talk to
// (*stepup.DialError), or no stepupctl-inspect to hand over to.
type hinted interface {
	error
	Hint() string
}

// PrintError writes "stepupctl: what happened" and a "hint:" line saying
// what to do.
func (a *App) PrintError(err error) {
	var he hinted
	var ae *api.Error
	var ue UsageError
	switch {
	case errors.As(err, &he):
		fmt.Fprintf(a.Stderr, "stepupctl: %v\n", he)
		fmt.Fprintf(a.Stderr, "hint: %s\n", he.Hint())
	case errors.As(err, &ae):
		fmt.Fprintf(a.Stderr, "stepupctl: %s\n", cliHint(ae.Message))
		if ae.Data.RetryAfterSeconds > 0 && !strings.Contains(ae.Message, "try again in") {
			fmt.Fprintf(a.Stderr, "stepupctl: retry after %ds\n", ae.Data.RetryAfterSeconds)
		}
		if ae.Data.Hint != "" {
			fmt.Fprintf(a.Stderr, "hint: %s\n", cliHint(ae.Data.Hint))
		}
	case errors.As(err, &ue):
		fmt.Fprintf(a.Stderr, "stepupctl: %v\n", ue.Err)
		fmt.Fprintf(a.Stderr, "hint: see %s --help\n", ue.Cmd)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(a.Stderr, "stepupctl: interrupted")
	default:
		fmt.Fprintf(a.Stderr, "stepupctl: %v\n", err)
		if strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)") {
			fmt.Fprintln(a.Stderr, "hint: see stepupctl --help")
		}
	}
}

// PrintJSON writes v as indented JSON.
func (a *App) PrintJSON(v any) error {
	enc := json.NewEncoder(a.Stdout)
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

// ExactArgs takes n arguments, and says "VERB takes WHAT" otherwise.
func ExactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return UsageError{fmt.Errorf("%s takes %s", cmd.Name(), what), cmd.CommandPath()}
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return UsageError{fmt.Errorf("%s takes %s", cmd.Name(), what), cmd.CommandPath()}
		}
		return nil
	}
}
