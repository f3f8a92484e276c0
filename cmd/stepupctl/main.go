// Command stepupctl is the command-line client of stepup-agent. Its verbs
// mirror the protocol (docs/protocol.md): check, prompt, token, verify,
// reset, status, jwks, enroll, credentials, exec, lock, unlock. It runs
// audit, doctor and shell completion in stepupctl-inspect, next to it
// (see internal/ctl).
package main

import "github.com/stepup-agent/stepup-agent/internal/ctl"

func main() { ctl.Main(nil) }
