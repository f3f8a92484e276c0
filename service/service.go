// Package service lets the agent run as a service of the system's service
// manager: socket activation (Listener), readiness, status and watchdog
// notifications (Notifier), and logging to the journal (NewLogger).
//
// Under systemd (packaging/systemd/user, docs/systemd.md) the socket unit
// owns $XDG_RUNTIME_DIR/stepup/agent.sock and hands it to the agent on the
// first connection; the agent tells systemd when it is ready (Type=notify),
// pings the watchdog and logs structured fields to journald. Elsewhere
// (macOS, a shell) every function here is a harmless no-op: Listener says
// "not activated", the Notifier sends nothing and NewLogger logs to stderr.
package service

// FDName is the name the socket unit gives the agent's socket
// (FileDescriptorName=agent in stepup-agent.socket, --fdname=agent for
// systemd-socket-activate).
const FDName = "agent"

// RemoteFDName is the name of the remote socket, for ssh -R
// (FileDescriptorName=remote in stepup-agent-remote.socket; docs/remote.md).
const RemoteFDName = "remote"
