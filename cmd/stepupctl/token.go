package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

func (a *app) tokenCmd() *cobra.Command {
	var f promptFlags
	var noPrompt bool
	cmd := &cobra.Command{
		Use:   "token SCOPE",
		Short: "Print the token held for SCOPE, stepping up first when needed",
		Long: `token prints the elevated token the agent holds for SCOPE (getToken), for
shell scripts:

  stepupctl token wallet:sign | sed 's/^/X-Elevated-Token: /' | curl -H @- https://...

(curl reads the header from standard input: a token on a command line,
as in -H "X-Elevated-Token: $(stepupctl token ...)", is readable by every
local user.)

When no token is held it steps up first (as prompt does), unless --no-prompt.`,
		Args: exactArgs(1, "one scope"),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.tokenFor(cmd.Context(), args[0], &f, noPrompt)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(t)
			}
			fmt.Fprintln(a.stdout, t.Token)
			return nil
		},
	}
	f.add(cmd)
	f.details.add(cmd)
	cmd.Flags().BoolVar(&noPrompt, "no-prompt", false, "fail instead of stepping up when no token is held")
	return cmd
}

// tokenFor returns a token for scope, stepping up when the agent holds
// none this client may use.
func (a *app) tokenFor(ctx context.Context, scope string, f *promptFlags, noPrompt bool) (*stepup.Token, error) {
	details, err := f.details.raw()
	if err != nil {
		return nil, err
	}
	q := stepup.Query{Scope: scope}
	if details != nil {
		q.AuthorizationDetails = details
	}
	t, err := a.client.GetTokenFor(ctx, q)
	if err == nil || noPrompt || !errors.Is(err, api.ErrTokenInvalid) {
		return t, err
	}
	res, err := a.stepUp(ctx, []string{scope}, f)
	if err != nil {
		return nil, err
	}
	return &stepup.Token{Token: res.Token, Scopes: res.Scopes, ExpiresAt: res.ExpiresAt, SingleUse: res.SingleUse}, nil
}

func (a *app) verifyCmd() *cobra.Command {
	var scope string
	var consume bool
	cmd := &cobra.Command{
		Use:   "verify - --scope SCOPE [--consume] <TOKENFILE",
		Short: "Check a token for a scope (exit 1 when it is not valid); --consume uses up a single-use one",
		Args:  exactArgs(1, "one token (use - to read it from standard input)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" {
				return usageError{errors.New("verify needs --scope"), cmd.CommandPath()}
			}
			tok := args[0]
			if tok == "-" {
				b, err := readAllCtx(cmd.Context(), io.LimitReader(a.stdin, 64<<10))
				if err != nil {
					return fmt.Errorf("reading the token from standard input: %w", err)
				}
				tok = strings.TrimSpace(string(b))
				if tok == "" {
					return usageError{errors.New("verify -: no token on standard input"), cmd.CommandPath()}
				}
			} else {
				fmt.Fprintln(a.stderr, "stepupctl: warning: a token on the command line is readable by every local user (ps, /proc/PID/cmdline); pass - and give the token on standard input: stepupctl verify - --scope S <file")
			}
			c, err := a.client.VerifyToken(cmd.Context(), tok, scope, consume)
			if errors.Is(err, api.ErrTokenInvalid) {
				if a.json {
					a.printJSON(map[string]any{"valid": false, "error": err})
				}
				a.printError(err)
				return exitCode(exitRequired)
			}
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(api.VerifyTokenResult{Valid: true, Claims: *c})
			}
			fmt.Fprintf(a.stdout, "valid: %s for %q, %s, amr %s, expires %s", c.Subject, c.Scope, useKind(c.SingleUse), strings.Join(c.AMR, ","), when(unixTime(c.Expiry)))
			if consume && c.SingleUse {
				fmt.Fprint(a.stdout, "; consumed")
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "the scope the token must carry")
	cmd.Flags().BoolVar(&consume, "consume", false, "consume a single-use token (a relying party about to act)")
	return cmd
}

func (a *app) resetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset [SCOPE...]",
		Short: "Revoke the tokens of SCOPEs, or every token (resetState)",
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.client.ResetState(cmd.Context(), args...)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(api.ResetResult{Revoked: n})
			}
			fmt.Fprintf(a.stdout, "revoked %d token(s)\n", n)
			return nil
		},
	}
}

func (a *app) jwksCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "jwks",
		Short: "Print the agent's token-signing public keys (a JWK Set)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.client.JWKS(cmd.Context())
			if err != nil {
				return err
			}
			var v any
			jsonUnmarshal(raw, &v)
			return a.printJSON(v)
		},
	}
}

// readAllCtx is io.ReadAll that returns when ctx ends (Ctrl-C while
// stepupctl waits for a token typed on a terminal); the read itself is
// left to the process's exit.
func readAllCtx(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		return res.b, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
