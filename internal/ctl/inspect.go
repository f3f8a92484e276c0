package ctl

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// inspectName is the program that runs the verbs in InspectVerbs, and the
// answers of shell completion, for stepupctl: the one next to it, else
// the one on $PATH.
//
// Those verbs read this machine's files and services (the audit log and
// its rotated gzip files, JWK Sets, the policy's YAML, the session bus,
// systemd). The code for that (YAML, JOSE and x509, D-Bus, gzip) is
// initialised at the start of every run of the binary that links it:
// it was a tenth of `stepupctl check`, a verb that needs none of it
// (docs/BENCHMARKS.md). So stepupctl links none of it: it replaces
// itself with stepupctl-inspect for these verbs, and stepupctl-inspect is
// the whole CLI.
const inspectName = "stepupctl-inspect"

// handoffEnv carries, to stepupctl-inspect only (it unsets it at once),
// the version of the stepupctl that handed the run over: doctor compares
// the two, and a stepupctl that finds it set and would hand the run over
// again has been handed a run meant for stepupctl-inspect. (Its own
// verbs run as usual: the variable is unset for what they start.)
const handoffEnv = "STEPUPCTL_HANDOFF"

// handedAgainError: a stepupctl that was handed a run would hand it over
// again (exit 5).
type handedAgainError struct {
	self  string // this program, as it was run
	value string // STEPUPCTL_HANDOFF's
}

func (e *handedAgainError) Error() string {
	return fmt.Sprintf("%s=%q is set, so this stepupctl (%s) was handed a run meant for stepupctl-inspect: "+
		"either the stepupctl-inspect next to stepupctl is a stepupctl (a copy or a link), or the variable was left in the environment",
		handoffEnv, e.value, e.self)
}

// Hint says what to do.
func (e *handedAgainError) Hint() string {
	return "unset " + handoffEnv + "; if it was not set, reinstall stepupctl and " + inspectName + " together (packaging/install.sh installs both)"
}

// errNotExecutable: the stepupctl-inspect next to stepupctl cannot run.
var errNotExecutable = errors.New("not an executable file")

// An InspectVerb is a verb stepupctl hands to stepupctl-inspect.
type InspectVerb struct{ Name, Short string }

// InspectVerbs are the verbs stepupctl runs in stepupctl-inspect, with
// the summary both programs' --help shows.
var InspectVerbs = []InspectVerb{
	{"audit", "Read the audit log: who stepped up for what, with which method, and what came of it"},
	{"doctor", "Check the socket, agent, keychain, prompters, policy, PAM, units and remote socket; say what to fix"},
}

// Extension is what stepupctl-inspect adds to the CLI: a builder for
// each of InspectVerbs, by name, and the completions of every verb's
// arguments.
type Extension struct {
	Verbs    map[string]func(*App) *cobra.Command
	Complete func(*App, *cobra.Command)
}

// runsElsewhere reports whether stepupctl hands a command line whose
// first word is first to stepupctl-inspect: one of InspectVerbs, or a
// shell asking for completions (cobra's __complete, which the scripts
// of `stepupctl completion` call).
func runsElsewhere(first string) bool {
	if first == cobra.ShellCompRequestCmd || first == cobra.ShellCompNoDescRequestCmd {
		return true
	}
	for _, v := range InspectVerbs {
		if v.Name == first {
			return true
		}
	}
	return false
}

// inspectStub stands in stepupctl's tree for a verb of stepupctl-inspect
// that is not the first word of the command line (`stepupctl --json
// doctor`, `stepupctl help audit`): it runs the same arguments there,
// flags and --help included.
func (a *App) inspectStub(v InspectVerb) *cobra.Command {
	c := &cobra.Command{
		Use:                v.Name,
		Short:              v.Short,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return a.execInspect() },
	}
	// `help VERB` asks stepupctl-inspect too (`VERB --help` reaches
	// RunE: flags are not parsed here); only a failure returns, to run.
	c.SetHelpFunc(func(*cobra.Command, []string) { a.pending = a.execInspect() })
	return c
}

// execInspect replaces this process with stepupctl-inspect, given the
// same arguments and environment, and handoffEnv. It returns only when
// that fails.
func (a *App) execInspect() error {
	if a.HandedOffBy != "" {
		// A stepupctl handed this run over, to a stepupctl: a copy or a
		// link named stepupctl-inspect, which would hand over again,
		// for ever.
		return &handedAgainError{self: os.Args[0], value: a.HandedOffBy}
	}
	path, err := inspectPath()
	if err != nil {
		return err
	}
	argv := append([]string{path}, a.args...)
	v := Version
	if v == "" { // a build that set it empty: the check needs a value
		v = "unknown"
	}
	env := append(os.Environ(), handoffEnv+"="+v)
	if err := syscall.Exec(path, argv, env); err != nil {
		return &inspectError{Path: path, Err: err}
	}
	return nil
}

// inspectPath finds stepupctl-inspect: next to this program (its real
// path, through symlinks), where every install puts it, else on $PATH
// (`go run ./cmd/stepupctl` runs from a build cache).
func inspectPath() (string, error) {
	var tried string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			tried = filepath.Dir(exe)
			p := filepath.Join(tried, inspectName)
			if _, err := os.Lstat(p); err == nil {
				// There (a dangling link too), so this one or none:
				// one from $PATH could be any version.
				st, err := os.Stat(p)
				switch {
				case err != nil:
					return "", &inspectError{Path: p, Err: err}
				case !st.Mode().IsRegular() || st.Mode()&0o111 == 0:
					return "", &inspectError{Path: p, Err: errNotExecutable}
				}
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath(inspectName); err == nil {
		return filepath.Abs(p)
	}
	return "", &inspectError{Dir: tried, Err: exec.ErrNotFound}
}

// inspectError: stepupctl could not run stepupctl-inspect (exit 5).
type inspectError struct {
	Path string // the program that could not be run, or ""
	Dir  string // when it was not found: the directory searched first
	Err  error
}

func (e *inspectError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("cannot run %s, which runs stepupctl's audit, doctor and shell completion: %v", e.Path, e.Err)
	}
	where := "next to stepupctl"
	if e.Dir != "" {
		where = "in " + e.Dir
	}
	return fmt.Sprintf("%s, which runs stepupctl's audit, doctor and shell completion, is neither %s nor on $PATH", inspectName, where)
}

func (e *inspectError) Unwrap() error { return e.Err }

// Hint says what to do.
func (e *inspectError) Hint() string {
	if e.Path != "" {
		return "reinstall stepupctl and " + inspectName + " together (packaging/install.sh installs both)"
	}
	dir := e.Dir
	if dir == "" {
		dir = "DIR"
	}
	return fmt.Sprintf("install it beside stepupctl: packaging/install.sh installs both, or go build -o %s/ ./cmd/%s", dir, inspectName)
}
