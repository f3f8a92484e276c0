package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/policy"
)

// startPolicyError is a policy that stops the start, one error a line.
type startPolicyError struct {
	path string
	err  error
}

func (e *startPolicyError) Error() string {
	var b strings.Builder
	var list policy.ErrorList
	if errors.As(e.err, &list) {
		fmt.Fprintf(&b, "refusing to start: the policy %s does not validate:", e.path)
		for _, pe := range list {
			fmt.Fprintf(&b, "\n  %s", strings.TrimPrefix(pe.Error(), e.path+": "))
		}
	} else {
		fmt.Fprintf(&b, "refusing to start: the policy %s cannot be used:\n  %s", e.path, strings.TrimPrefix(e.err.Error(), e.path+": "))
	}
	fmt.Fprintf(&b, "\nfix the file (or move it away to start on the built-in defaults) and start the agent again")
	return b.String()
}

func (e *startPolicyError) Unwrap() error { return e.err }

// keychainLine says at start which keychain backend holds the state, for
// stderr (and, started in the background, the terminal of eval).
func keychainLine(backend, stateDir string) string {
	switch b := backend; b {
	case "file":
		return "keychain: file, " + filepath.Join(stateDir, keychain.FileName) + " (mode 0600, not encrypted: protected by its permissions only)"
	case "memory":
		return "keychain: memory: tokens, credentials and the signing key are lost when the agent stops"
	default:
		return "keychain: " + b
	}
}
