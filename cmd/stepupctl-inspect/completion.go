package main

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/policy"
)

// Shell completion: cobra's own `stepupctl completion bash|zsh|fish`
// scripts call back into `stepupctl __complete`, which lands here. Scope
// arguments complete from the agent's policy (the file the running agent
// loaded, else the default path) and the scopes of held tokens;
// credential IDs from the agent's listCredentials. Nothing here prompts
// or changes state, and an agent that does not answer within a second
// just gives fewer candidates.

const completionTimeout = time.Second

// methodNames are the verification methods (docs/methods.md).
var methodNames = []string{"totp", "passkey", "recovery_code", "fingerprint", "password", "email_otp", "sms_otp", "wallet"}

// wireCompletion sets the argument and flag completions of root's verbs.
func (a *app) wireCompletion(root *cobra.Command) {
	scopes := func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return a.completeScopes(cmd.Context(), args), cobra.ShellCompDirectiveNoFileComp
	}
	oneScope := func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return scopes(cmd, args, toComplete)
	}
	methods := func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return methodNames, cobra.ShellCompDirectiveNoFileComp
	}
	for _, c := range root.Commands() {
		switch c.Name() {
		case "check", "token":
			c.ValidArgsFunction = oneScope
		case "prompt", "reset":
			c.ValidArgsFunction = scopes
		case "enroll":
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return methods(cmd, args, toComplete)
			}
		case "credentials":
			for _, sub := range c.Commands() {
				if sub.Name() == "remove" {
					sub.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
						if len(args) > 0 {
							return nil, cobra.ShellCompDirectiveNoFileComp
						}
						return a.completeCredentials(cmd.Context()), cobra.ShellCompDirectiveNoFileComp
					}
				}
			}
		}
		if c.Flags().Lookup("scope") != nil {
			_ = c.RegisterFlagCompletionFunc("scope", scopes)
		}
		if c.Flags().Lookup("method") != nil {
			_ = c.RegisterFlagCompletionFunc("method", methods)
		}
		if c.Name() == "exec" {
			// After --, the command's own completion: files.
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				return nil, cobra.ShellCompDirectiveDefault
			}
		}
	}
}

func (a *app) completionClient() *stepup.Client {
	if a.Client == nil {
		a.Client = &stepup.Client{Socket: a.Socket, Serial: true}
	}
	return a.Client
}

// completeScopes lists the scopes worth offering: the policy's exact
// names (the built-in ones included unless the policy drops them) and the
// held tokens' scopes; not patterns, and not what args already name.
func (a *app) completeScopes(ctx context.Context, args []string) []string {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	names := map[string]bool{}
	path := defaultPolicyPath()
	if st, err := a.completionClient().Status(ctx); err == nil {
		if st.Policy.Path != "" {
			path = st.Policy.Path
		}
		for _, t := range st.Tokens {
			for _, s := range strings.Fields(t.Scope) {
				names[s] = true
			}
		}
	}
	p, _, err := policy.Load(path)
	if err != nil {
		p = policy.Default()
	}
	for n := range p.Scopes {
		names[n] = true
	}
	if p.BuiltinScopes == nil || *p.BuiltinScopes {
		for n := range policy.Builtin() {
			names[n] = true
		}
	}
	for _, s := range args {
		delete(names, s)
	}
	var out []string
	for n := range names {
		if !strings.Contains(n, "*") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// completeCredentials lists the agent's credential IDs, each with its
// method and label as the description shells show beside it.
func (a *app) completeCredentials(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	creds, err := a.completionClient().ListCredentials(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range creds {
		desc := c.Method
		if c.Label != "" {
			desc += " " + c.Label
		}
		out = append(out, c.ID+"\t"+desc)
	}
	return out
}

// defaultPolicyPath is the agent's default policy file
// ($XDG_CONFIG_HOME/stepup/policy.yaml).
func defaultPolicyPath() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "stepup", "policy.yaml")
}
