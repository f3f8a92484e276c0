#!/usr/bin/env bash
# Builds stepup-agent, stepupctl and stepupctl-inspect into ./bin and runs the agent in the
# foreground with the built-in defaults (no configuration needed). Go is
# the only prerequisite: both are built without cgo (static on Linux).
# Where a C compiler and libpam's headers are (Debian: gcc libpam0g-dev)
# it also builds stepup-pam-helper next to the agent, for the password
# method; without it the agent says at start why password is unavailable.
# Extra arguments go to stepup-agent, e.g. --keychain memory or
# --prompter none.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
agentcgo=0
[ "$(uname -s)" != Darwin ] || agentcgo=1   # macOS: cgo for the Keychain
CGO_ENABLED=$agentcgo go build -o bin/ ./cmd/stepup-agent
CGO_ENABLED=0 go build -o bin/ ./cmd/stepupctl ./cmd/stepupctl-inspect   # static: starts faster (README, "Install")
if ! CGO_ENABLED=1 go build -o bin/ ./cmd/stepup-pam-helper 2>/dev/null; then
	rm -f bin/stepup-pam-helper
	echo "run-agent.sh: stepup-pam-helper not built (needs gcc and libpam0g-dev); the password method is unavailable" >&2
fi
exec bin/stepup-agent -D "$@"
