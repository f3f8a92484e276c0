package main

import (
	"github.com/stepup-agent/stepup-agent/prompt"
	"go.uber.org/zap"
)

// newSelector returns the prompt selector for a driver name
// (docs/prompts.md): the drivers whose programs are installed, chosen per
// request from where the requester sits.
func newSelector(name string, log *zap.Logger) (prompt.Selector, error) {
	return prompt.NewSelector(name, log)
}
