package ctl

// Version is stepupctl's version, and stepupctl-inspect's (the agent's is
// agent.Version; release builds set both with -ldflags -X).
var Version = "0.1.0-dev"
