#!/usr/bin/env bash
# Builds stepup-agent and stepupctl into ./bin and runs the agent in the
# foreground with the built-in defaults (no configuration needed). Extra
# arguments go to stepup-agent, e.g. --keychain memory or --prompter none.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/ ./cmd/stepup-agent
CGO_ENABLED=0 go build -o bin/ ./cmd/stepupctl   # static: starts faster (README, "Install")
exec bin/stepup-agent -D "$@"
