// Package prompt asks the user for an answer (a code, a password) or a
// confirmation through a native prompt: pinentry, zenity, osascript, or the
// requester's own terminal. docs/prompts.md says how a driver is chosen.
package prompt

import (
	"context"
	"errors"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// Errors every driver returns for the user's and the clock's answers.
var (
	// ErrCancelled: the user dismissed the prompt.
	ErrCancelled = errors.New("prompt cancelled")
	// ErrTimeout: nobody answered in time.
	ErrTimeout = errors.New("prompt timed out")
	// ErrNoPrompter: no driver can reach the user from here.
	ErrNoPrompter = errors.New("no prompter")
)

// Request is what a prompt shows. Every prompt names who is asking and for
// what (Title, Description), and the time left (Timeout).
type Request struct {
	Title       string        // window title, e.g. "stepup-agent"
	Description string        // who asks, for which scopes, why, with which method
	Prompt      string        // the label before the input, e.g. "TOTP code:"
	Error       string        // shown on a retry after a wrong answer
	OK, Cancel  string        // button labels; empty for defaults
	Timeout     time.Duration // the prompt closes itself after this
	Env         api.PromptEnv // where the requester sits
}

// Prompter shows prompts. Implementations must return promptly when ctx is
// done (the client hung up, the agent is stopping), closing the prompt and
// reaping any program they started.
type Prompter interface {
	// Name is the driver's name as in --prompter.
	Name() string
	// GetPIN asks for a secret answer without echo.
	GetPIN(ctx context.Context, req Request) (string, error)
	// Confirm asks the user to confirm (OK) or cancel. It returns nil on OK
	// and ErrCancelled on cancel.
	Confirm(ctx context.Context, req Request) error
}

// Selector picks the prompter for one request from where it came from.
type Selector interface {
	// Select returns the prompter for env, or an error wrapping
	// ErrNoPrompter whose message says what to configure.
	Select(env api.PromptEnv) (Prompter, error)
	// Name describes the configured driver for status ("auto", "none", ...).
	Name() string
}

// None is the selector for --prompter none: it never shows a prompt.
type None struct{}

func (None) Name() string { return "none" }
func (None) Select(api.PromptEnv) (Prompter, error) {
	return nil, &NoPrompterError{Hint: "the agent was started with --prompter none; answer on the client's terminal (stepupctl prompt does), use startVerification/completeVerification, or start the agent with --prompter auto"}
}

// NoPrompterError is an ErrNoPrompter with a hint on what to configure.
type NoPrompterError struct{ Hint string }

func (e *NoPrompterError) Error() string        { return "no way to show a prompt here" }
func (e *NoPrompterError) Unwrap() error        { return ErrNoPrompter }
func (e *NoPrompterError) Is(target error) bool { return target == ErrNoPrompter }
