package ctl

import (
	"context"
	"errors"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// Exit codes, as DESIGN.md's table fixes them for every verb.
const (
	ExitOK        = 0
	ExitRequired  = 1 // check: step-up is required; verify: the token is not valid
	ExitUsage     = 2 // unknown verb or flag, bad argument
	ExitCancelled = 3 // the user cancelled, or nobody answered in time
	ExitRefused   = 4 // the agent refused: any other agent error
	ExitNoAgent   = 5 // no agent to talk to, or it failed; or stepupctl-inspect cannot be run
)

// errNoAnswer: --stdin found nothing to answer with (exit 3: nobody
// answered).
var errNoAnswer = errors.New("no answer on standard input (--stdin)")

// exitFor maps an error to its exit code.
func exitFor(err error) int {
	var ec ExitCode
	var ue UsageError
	var de *stepup.DialError
	var ae *api.Error
	var ie *inspectError
	var he *handedAgainError
	switch {
	case errors.As(err, &ec):
		return int(ec)
	case errors.As(err, &ue), isCobraUsage(err):
		return ExitUsage
	case errors.As(err, &de), errors.As(err, &ie), errors.As(err, &he):
		return ExitNoAgent
	case errors.As(err, &ae):
		switch ae.Code {
		case api.CodeCancelled, api.CodeTimeout:
			return ExitCancelled
		case api.CodeInternal, api.CodeParseError, api.CodeInvalidRequest:
			return ExitNoAgent
		}
		return ExitRefused
	case errors.Is(err, errNoAnswer), errors.Is(err, context.Canceled):
		return ExitCancelled
	}
	// Anything else happened between us and the agent (a connection
	// lost mid-call, an answer we cannot read): the agent failed us.
	return ExitNoAgent
}

// isCobraUsage recognises cobra's own errors about the command line.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.Contains(s, "arg(s)") ||
		strings.HasPrefix(s, "unknown flag") || strings.HasPrefix(s, "unknown shorthand flag")
}

// cliHints rewrites the agent's protocol words into this CLI's: a person
// at a terminal sets --timeout, not timeoutSeconds.
var cliHints = strings.NewReplacer(
	// Longer phrases first: at one position the first match wins.
	"timeoutSeconds in the request", "pass --timeout SECONDS",
	"timeoutSeconds", "--timeout",
	"start again with startVerification", "run the stepupctl command again (stepupctl prompt --stdin to answer here)",
	"use startVerification/completeVerification", "answer here with stepupctl prompt --stdin",
	"startVerification/completeVerification", "stepupctl prompt --stdin",
	"startVerification", "stepupctl prompt --stdin",
	"use promptMfa / stepupctl prompt --mfa", "use stepupctl prompt --mfa",
	"promptStepUpAuth", "stepupctl prompt",
	"email_otp: enrollStart needs {address}", "email_otp: stepupctl enroll email_otp needs --address",
	"sms_otp: enrollStart needs {phone}", "sms_otp: stepupctl enroll sms_otp needs --phone",
	"requestedScopes", "the scopes",
	"resetState", "stepupctl reset",
)

func cliHint(s string) string { return cliHints.Replace(s) }
