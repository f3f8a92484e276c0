package ctl

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// TestExitFor covers the rows of DESIGN.md's exit table that the scripts
// cannot reach without a person at a prompt (4001, 4004).
func TestExitFor(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{&api.Error{Code: api.CodeCancelled}, 3},
		{&api.Error{Code: api.CodeTimeout}, 3},
		{fmt.Errorf("wrapped: %w", &api.Error{Code: api.CodeVerificationFailed}), 4},
		{&api.Error{Code: api.CodeRateLimited}, 4},
		{&api.Error{Code: api.CodeForbidden}, 4},
		{&api.Error{Code: api.CodeTokenInvalid}, 4},
		{&api.Error{Code: api.CodeLocked}, 4},
		{&api.Error{Code: api.CodeInvalidParams}, 4},
		{&api.Error{Code: api.CodeInternal}, 5},
		{&stepup.DialError{Socket: "/x", Err: errors.New("refused")}, 5},
		{io.ErrUnexpectedEOF, 5},
		{UsageError{errors.New("bad"), "stepupctl"}, 2},
		{errors.New(`unknown command "x" for "stepupctl"`), 2},
		{errNoAnswer, 3},
		{ExitCode(1), 1},
	} {
		if got := exitFor(c.err); got != c.want {
			t.Errorf("exitFor(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestCLIHints(t *testing.T) {
	for in, want := range map[string]string{
		"answer sooner, or raise prompt.timeout in the policy or timeoutSeconds in the request": "answer sooner, or raise prompt.timeout in the policy or pass --timeout SECONDS",
		"start again with startVerification":                                                    "run the stepupctl command again (stepupctl prompt --stdin to answer here)",
	} {
		if got := cliHint(in); got != want {
			t.Errorf("cliHint(%q) = %q, want %q", in, got, want)
		}
	}
}
