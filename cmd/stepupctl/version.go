package main

// version is stepupctl's version (the agent's is agent.Version; release
// builds set both with -ldflags -X).
var version = "0.1.0-dev"
