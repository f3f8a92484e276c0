package service

import (
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// sdNotify sends one notification with go-systemd's daemon package. The
// environment is left in place (false): systemd's default NotifyAccess=main
// ignores messages from the prompt programs the agent starts.
func sdNotify(state string) (bool, error) { return daemon.SdNotify(false, state) }

func notifyEnabled() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

func watchdogTimeout() (time.Duration, error) { return daemon.SdWatchdogEnabled(false) }
