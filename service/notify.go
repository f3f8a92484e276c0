package service

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Notifier tells the service manager about the agent's state
// (sd_notify(3)): READY=1 once the keychain and policy are loaded, a
// one-line STATUS=, STOPPING=1 on shutdown and WATCHDOG=1 pings. Without a
// service manager listening (no NOTIFY_SOCKET, or not Linux) every call is
// a no-op. The zero value is not usable; call NewNotifier.
type Notifier struct {
	log *zap.Logger
	// Check, when set, runs before each watchdog ping; an error skips the
	// ping (and is logged), so a wedged agent is restarted by the service
	// manager instead of being kept alive by a ticker that still runs.
	Check func(ctx context.Context) error
}

// NewNotifier returns a Notifier that logs failed notifications to log.
func NewNotifier(log *zap.Logger) *Notifier {
	if log == nil {
		log = zap.NewNop()
	}
	return &Notifier{log: log}
}

// Enabled reports whether a service manager listens for notifications.
func (n *Notifier) Enabled() bool { return notifyEnabled() }

// Ready sends READY=1 with a status line.
func (n *Notifier) Ready(status string) {
	st := "READY=1"
	if status != "" {
		st += "\nSTATUS=" + oneLine(status)
	}
	n.send(st)
}

// Status sends STATUS= with a one-line summary (no secrets: the service
// manager shows it to anyone who runs systemctl status).
func (n *Notifier) Status(s string) { n.send("STATUS=" + oneLine(s)) }

// Stopping sends STOPPING=1.
func (n *Notifier) Stopping() { n.send("STOPPING=1\nSTATUS=stopping") }

// WatchdogInterval is how often RunWatchdog pings: half of WATCHDOG_USEC,
// or 0 when the service manager has no watchdog for this process.
func (n *Notifier) WatchdogInterval() time.Duration {
	d, err := watchdogTimeout()
	if err != nil {
		n.log.Warn("ignoring a malformed watchdog setting", zap.Error(err))
		return 0
	}
	return d / 2
}

// RunWatchdog sends WATCHDOG=1 at half of WATCHDOG_USEC until ctx is done;
// it returns at once when no watchdog is set.
func (n *Notifier) RunWatchdog(ctx context.Context) {
	every := n.WatchdogInterval()
	if every <= 0 {
		return
	}
	n.log.Debug("watchdog enabled", zap.Duration("interval", every))
	t := time.NewTicker(every)
	defer t.Stop()
	n.ping(ctx, every)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.ping(ctx, every)
		}
	}
}

func (n *Notifier) ping(ctx context.Context, every time.Duration) {
	if n.Check != nil {
		cctx, cancel := context.WithTimeout(ctx, every)
		err := n.Check(cctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("watchdog check failed; not pinging the service manager", zap.Error(err))
			}
			return
		}
	}
	n.send("WATCHDOG=1")
}

func (n *Notifier) send(state string) {
	if _, err := sdNotify(state); err != nil {
		n.log.Warn("cannot notify the service manager", zap.Error(err))
	}
}

// oneLine keeps a status to one line of printable text.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return strings.TrimSpace(s)
}
