// Command stepup-agent is the step-up authentication agent: a per-user
// daemon that gates sensitive actions behind a fresh verification of the
// user and mints short-lived, scope-bound elevated access tokens.
//
// It follows ssh-agent's conventions: with no arguments it starts in the
// background and prints shell commands that point clients at it, so that
//
//	eval "$(stepup-agent)"
//
// works; -D runs it in the foreground, -a binds a socket path, -k kills
// the agent named by STEPUP_AGENT_PID. See docs/protocol.md and README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/stepup-agent/stepup-agent/agent"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
)

func main() {
	// The agent holds its state for long and makes little garbage per
	// request (a few hundred bytes): the collector's default target, a
	// heap twice the live one, mostly keeps freed memory resident. Half
	// again the live heap costs a collection every few thousand requests
	// and keeps RSS near what is held (docs/BENCHMARKS.md). GOGC, when
	// set, still decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	// The daemon serves no profiles: sampling allocations for one only
	// grows its heap (a bucket per allocating stack).
	runtime.MemProfileRate = 0
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	foreground bool
	socket     string
	remoteSock string // --remote-socket: PATH, none, or "" for next to socket
	kill       bool
	csh, sh    bool
	policy     string
	auditPath  string
	keychain   string
	prompter   string
	debug      bool
	pamHelper  string
	version    bool
	child      bool // internal: the background child of a plain start
}

const usage = `usage: stepup-agent [-c | -s] [-D] [-a SOCKET] [--remote-socket PATH|none]
                    [--policy FILE] [--audit FILE]
                    [--keychain auto|secretservice|macos|file|memory]
                    [--prompter auto|pinentry|zenity|osascript|terminal|none]
                    [--pam-helper PATH]
       stepup-agent [-c | -s] -k

With no -D the agent starts in the background and prints the shell commands
that set STEPUP_AUTH_SOCK and STEPUP_AGENT_PID:  eval "$(stepup-agent)"

`

func parse(args []string, stdout, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("stepup-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below: stdout when asked for, stderr on a mistake
	fs.BoolVar(&o.foreground, "D", false, "run in the foreground (logs to stderr)")
	fs.StringVar(&o.socket, "a", "", "bind the socket to `PATH` (default $XDG_RUNTIME_DIR/stepup/agent.sock)")
	fs.StringVar(&o.remoteSock, "remote-socket", "", "the remote socket's `PATH`, for ssh -R (docs/remote.md), or none (default: remote.sock beside the socket)")
	fs.BoolVar(&o.kill, "k", false, "kill the agent named by STEPUP_AGENT_PID")
	fs.BoolVar(&o.csh, "c", false, "print csh-style commands")
	fs.BoolVar(&o.sh, "s", false, "print sh-style commands")
	fs.StringVar(&o.policy, "policy", "", "policy `FILE` (default $XDG_CONFIG_HOME/stepup/policy.yaml; built-in defaults when absent)")
	fs.StringVar(&o.auditPath, "audit", "", "audit log `FILE` (default $XDG_STATE_HOME/stepup/audit.jsonl)")
	fs.StringVar(&o.keychain, "keychain", "auto", "where tokens, keys and credentials are kept: "+strings.Join(keychain.Backends, "|"))
	fs.StringVar(&o.prompter, "prompter", "", "prompt driver: auto|pinentry|zenity|osascript|terminal|none (default: the policy's prompt.driver, auto)")
	fs.BoolVar(&o.debug, "debug", false, "log at debug level")
	fs.StringVar(&o.pamHelper, "pam-helper", "", "the password method's `PATH` to stepup-pam-helper (default: next to stepup-agent, or ../libexec/stepup-agent/)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.BoolVar(&o.child, "internal-child", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Asked for: the usage is the output, on stdout.
			printUsage(fs, stdout)
		} else { // the flag package has printed the error
			printUsage(fs, stderr)
			err = errUsagePrinted
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (stepup-agent does not run commands; use eval \"$(stepup-agent)\")", fs.Arg(0))
	}
	if o.csh && o.sh {
		return nil, errors.New("-c and -s cannot be used together")
	}
	if o.pamHelper != "" {
		abs, err := filepath.Abs(o.pamHelper)
		if err != nil {
			return nil, fmt.Errorf("--pam-helper: %v", err)
		}
		o.pamHelper = abs
	}
	if o.prompter != "" && !validPrompter(o.prompter) {
		return nil, fmt.Errorf("unknown --prompter %q: use auto, pinentry, zenity, osascript, terminal or none", o.prompter)
	}
	return o, nil
}

// errUsagePrinted: the flag error and the usage are already on stderr.
var errUsagePrinted = errors.New("usage printed")

// printUsage writes the usage and the flags, leaving out internal ones
// (those with no usage text).
func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, usage)
	hidden := flag.NewFlagSet("", flag.ContinueOnError)
	hidden.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage != "" {
			hidden.Var(f.Value, f.Name, f.Usage)
		}
	})
	hidden.PrintDefaults()
}

func validPrompter(p string) bool {
	switch p {
	case "auto", "pinentry", "zenity", "osascript", "terminal", "none":
		return true
	}
	return false
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsagePrinted) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "stepup-agent: %v\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "stepup-agent %s\n", agent.Version)
		return 0
	}
	if o.kill {
		return kill(o, stdout, stderr)
	}
	if o.socket == "" {
		o.socket = api.DefaultSocketPath()
	}
	abs, err := filepath.Abs(o.socket)
	if err != nil {
		fmt.Fprintf(stderr, "stepup-agent: %v\n", err)
		return 1
	}
	o.socket = abs
	switch o.remoteSock {
	case "none":
	case "":
		o.remoteSock = filepath.Join(filepath.Dir(o.socket), "remote.sock")
	default:
		if o.remoteSock, err = filepath.Abs(o.remoteSock); err != nil {
			fmt.Fprintf(stderr, "stepup-agent: --remote-socket: %v\n", err)
			return 1
		}
	}
	if o.remoteSock == o.socket {
		fmt.Fprintf(stderr, "stepup-agent: --remote-socket %s is the agent's own socket; give it another path, or none\n", o.remoteSock)
		return 2
	}
	if o.policy == "" {
		o.policy = defaultPolicyPath()
	}
	if o.auditPath == "" {
		o.auditPath = ""
	}
	if !o.foreground && !o.child {
		return background(o, args, stdout, stderr)
	}
	return serve(o, stdout, stderr)
}

func defaultPolicyPath() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "stepup", "policy.yaml")
}

// useCsh reports whether to print csh syntax: -c, or SHELL ends in csh.
func useCsh(o *options) bool {
	if o.csh {
		return true
	}
	if o.sh {
		return false
	}
	return strings.HasSuffix(os.Getenv("SHELL"), "csh")
}

// envLines are the commands eval'd by the user's shell.
func envLines(o *options, pid int) string {
	if useCsh(o) {
		return fmt.Sprintf("setenv STEPUP_AUTH_SOCK %s;\nsetenv STEPUP_AGENT_PID %d;\necho Agent pid %d;\n", shellQuote(o.socket), pid, pid)
	}
	return fmt.Sprintf("STEPUP_AUTH_SOCK=%s; export STEPUP_AUTH_SOCK;\nSTEPUP_AGENT_PID=%d; export STEPUP_AGENT_PID;\necho Agent pid %d;\n", shellQuote(o.socket), pid, pid)
}

// shellQuote quotes s for sh and csh when it needs it.
func shellQuote(s string) string {
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
