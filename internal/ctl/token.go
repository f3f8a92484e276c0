package ctl

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

func (a *App) tokenCmd() *cobra.Command {
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
		Args: ExactArgs(1, "one scope"),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.tokenFor(cmd.Context(), args[0], &f, noPrompt)
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(t)
			}
			fmt.Fprintln(a.Stdout, t.Token)
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
func (a *App) tokenFor(ctx context.Context, scope string, f *promptFlags, noPrompt bool) (*stepup.Token, error) {
	details, err := f.details.raw()
	if err != nil {
		return nil, err
	}
	q := stepup.Query{Scope: scope}
	if details != nil {
		q.AuthorizationDetails = details
	}
	t, err := a.Client.GetTokenFor(ctx, q)
	if err == nil || noPrompt || !errors.Is(err, api.ErrTokenInvalid) {
		return t, err
	}
	res, err := a.stepUp(ctx, []string{scope}, f)
	if err != nil {
		return nil, err
	}
	return &stepup.Token{Token: res.Token, Scopes: res.Scopes, ExpiresAt: res.ExpiresAt, SingleUse: res.SingleUse}, nil
}

func (a *App) verifyCmd() *cobra.Command {
	var scope string
	var consume bool
	cmd := &cobra.Command{
		Use:   "verify - --scope SCOPE [--consume] <TOKENFILE",
		Short: "Check a token for a scope (exit 1 when it is not valid); --consume uses up a single-use one",
		Args:  ExactArgs(1, "one token (use - to read it from standard input)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" {
				return UsageError{errors.New("verify needs --scope"), cmd.CommandPath()}
			}
			tok := args[0]
			if tok == "-" {
				b, err := readAllCtx(cmd.Context(), io.LimitReader(a.Stdin, 64<<10))
				if err != nil {
					return fmt.Errorf("reading the token from standard input: %w", err)
				}
				tok = strings.TrimSpace(string(b))
				if tok == "" {
					return UsageError{errors.New("verify -: no token on standard input"), cmd.CommandPath()}
				}
			} else {
				fmt.Fprintln(a.Stderr, "stepupctl: warning: a token on the command line is readable by every local user (ps, /proc/PID/cmdline); pass - and give the token on standard input: stepupctl verify - --scope S <file")
			}
			c, err := a.Client.VerifyToken(cmd.Context(), tok, scope, consume)
			if errors.Is(err, api.ErrTokenInvalid) {
				if a.JSON {
					a.PrintJSON(map[string]any{"valid": false, "error": err})
				}
				a.PrintError(err)
				return ExitCode(ExitRequired)
			}
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(api.VerifyTokenResult{Valid: true, Claims: *c})
			}
			fmt.Fprintf(a.Stdout, "valid: %s for %q, %s, amr %s, expires %s", c.Subject, c.Scope, useKind(c.SingleUse), strings.Join(c.AMR, ","), when(unixTime(c.Expiry)))
			if consume && c.SingleUse {
				fmt.Fprint(a.Stdout, "; consumed")
			}
			fmt.Fprintln(a.Stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "the scope the token must carry")
	cmd.Flags().BoolVar(&consume, "consume", false, "consume a single-use token (a relying party about to act)")
	return cmd
}

func (a *App) resetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset [SCOPE...]",
		Short: "Revoke the tokens of SCOPEs, or every token (resetState)",
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.Client.ResetState(cmd.Context(), args...)
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(api.ResetResult{Revoked: n})
			}
			fmt.Fprintf(a.Stdout, "revoked %d token(s)\n", n)
			return nil
		},
	}
}

func (a *App) jwksCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "jwks",
		Short: "Print the agent's token-signing public keys (a JWK Set)",
		Args:  ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.Client.JWKS(cmd.Context())
			if err != nil {
				return err
			}
			var v any
			jsonUnmarshal(raw, &v)
			return a.PrintJSON(v)
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
