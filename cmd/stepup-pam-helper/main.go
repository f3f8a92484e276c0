// Command stepup-pam-helper checks the login password of the user who runs
// it through PAM, one check per run, for stepup-agent's password method.
// It is the only part of stepup-agent built with cgo (it links libpam),
// like polkit's polkit-agent-helper-1 or pam_unix's unix_chkpwd, so PAM
// modules never run inside the agent, which holds the tokens: a module
// that crashes or hangs takes down one helper, and the agent kills the
// helper when the client hangs up or the check times out.
//
// Usage (by stepup-agent, not by hand):
//
//	stepup-pam-helper [--service NAME]
//
// The request (the password) arrives on stdin and the answer leaves on
// stdout, as package method/password/pamproto describes. The helper checks
// only its own real uid's account; it takes no user name, and it refuses
// to run setuid or setgid.
//
// Build it where libpam's headers are (Debian: libpam0g-dev):
//
//	go build -o DIR/ ./cmd/stepup-pam-helper
//
// and install it next to stepup-agent (or pass stepup-agent --pam-helper
// PATH). See docs/methods.md, "password".
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/user"
	"regexp"
	"strconv"

	"github.com/stepup-agent/stepup-agent/method/password/pamproto"
)

const usage = `usage: stepup-pam-helper [--service NAME]

stepup-agent runs this helper to check your login password through PAM;
it reads a request on stdin (see docs/methods.md, "password").
`

// serviceName is what a PAM service name may be: a file name in /etc/pam.d.
var serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	service := "stepup-agent"
	for len(args) > 0 {
		switch {
		case args[0] == "--service" && len(args) > 1:
			service, args = args[1], args[2:]
		case args[0] == "-h" || args[0] == "--help":
			fmt.Print(usage)
			return pamproto.ExitOK
		default:
			fmt.Fprintf(os.Stderr, "stepup-pam-helper: unexpected argument %q\n%s", args[0], usage)
			return pamproto.ExitError
		}
	}
	// Checked before anything is read: installed setuid or setgid, the
	// helper would check passwords with privileges its caller does not
	// have.
	if os.Getuid() != os.Geteuid() || os.Getgid() != os.Getegid() {
		fmt.Fprintln(os.Stderr, "stepup-pam-helper: refusing to run setuid or setgid; install it mode 0755")
		pamproto.WriteResult(os.Stdout, pamproto.Error, "stepup-pam-helper is installed setuid or setgid; reinstall it with mode 0755")
		return pamproto.ExitError
	}
	if !serviceName.MatchString(service) {
		fmt.Fprintf(os.Stderr, "stepup-pam-helper: bad --service %q\n", service)
		pamproto.WriteResult(os.Stdout, pamproto.Error, fmt.Sprintf("bad PAM service name %q", service))
		return pamproto.ExitError
	}
	harden()
	// PAM modules may write to fd 1 themselves; only the helper's answer
	// goes to the agent's pipe.
	out, err := privateStdout()
	if err != nil {
		fmt.Fprintf(os.Stderr, "stepup-pam-helper: %v\n", err)
		pamproto.WriteResult(os.Stdout, pamproto.Error, err.Error())
		return pamproto.ExitError
	}
	in := bufio.NewReaderSize(os.Stdin, 4096)
	password, err := pamproto.ReadRequest(in)
	if err == pamproto.ErrHangup {
		return pamproto.ExitHangup
	}
	if err != nil {
		return answer(out, pamproto.Error, err.Error())
	}
	// The agent keeps stdin open until it has the answer: end of file
	// means it hung up (the client left, the check timed out, the agent
	// died), and the check stops here, wherever PAM is.
	go func() {
		io.Copy(io.Discard, in)
		os.Exit(pamproto.ExitHangup)
	}()
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		return answer(out, pamproto.Error, fmt.Sprintf("cannot tell which user runs the helper: %v", err))
	}
	kind, msg := check(service, u.Username, password, func(s string) {
		fmt.Fprintf(os.Stderr, "pam: %s\n", s)
	})
	return answer(out, kind, msg)
}

// answer writes the result line and returns the matching exit status.
func answer(out io.Writer, kind, msg string) int {
	if err := pamproto.WriteResult(out, kind, msg); err != nil {
		return pamproto.ExitHangup
	}
	switch kind {
	case pamproto.OK:
		return pamproto.ExitOK
	case pamproto.Wrong, pamproto.AccountExpired, pamproto.PasswordExpired:
		return pamproto.ExitRefused
	}
	return pamproto.ExitError
}
