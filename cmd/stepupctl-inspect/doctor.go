package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/ctl"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/policy"
	"golang.org/x/term"
)

// doctor looks at everything a new user's setup can get wrong, in the
// order they meet it, and says for each what to do. It never prompts and
// changes nothing.

// Check statuses.
const (
	checkOK      = "ok"
	checkWarning = "warning"
	checkError   = "error"
)

// doctorCheck is one line of the report.
type doctorCheck struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// doctorReport is the --json output.
type doctorReport struct {
	Checks   []doctorCheck `json:"checks"`
	Errors   int           `json:"errors"`
	Warnings int           `json:"warnings"`
}

func (r *doctorReport) add(check, status, hint, format string, args ...any) {
	r.Checks = append(r.Checks, doctorCheck{Check: check, Status: status, Message: fmt.Sprintf(format, args...), Hint: hint})
	switch status {
	case checkError:
		r.Errors++
	case checkWarning:
		r.Warnings++
	}
}

const startHint = `start it: eval "$(stepup-agent)", or systemctl --user enable --now stepup-agent.socket`

func (a *app) doctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: short("doctor"),
		Long: `doctor checks what stepup-agent needs and prints one line per check,
ok, warning or error, with a hint saying what to do:

  socket      the socket and its directory: the user's, nobody else may write
  agent       whether the agent answers, and its version against stepupctl's
  stepupctl   (only when they differ) the versions of stepupctl and of the
              stepupctl-inspect it runs for doctor, audit and completion
  keychain    the agent's backend and whether what it keeps survives a restart
  prompter    the agent's prompt driver, and whether pinentry, zenity or the
              terminal can reach this terminal or display
  policy      the policy file, each error with its line
  pam         the PAM service of the password method and stepup-pam-helper
  systemd     the user units and whether the socket is enabled
  lock        lock on sleep and screen lock (logind)
  remote      the socket made to be forwarded with ssh -R

It exits 0 when nothing is an error (warnings included), 1 otherwise.`,
		Args: ctl.ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := a.doctor(cmd.Context(), cmd.Root().Version)
			if a.JSON {
				if err := a.PrintJSON(r); err != nil {
					return err
				}
			} else {
				for _, c := range r.Checks {
					fmt.Fprintf(a.Stdout, "%-8s %-9s %s\n", c.Status, c.Check, c.Message)
					if c.Hint != "" {
						fmt.Fprintf(a.Stdout, "%-8s %-9s hint: %s\n", "", "", c.Hint)
					}
				}
				fmt.Fprintf(a.Stdout, "%d error(s), %d warning(s)\n", r.Errors, r.Warnings)
			}
			if r.Errors > 0 {
				return ctl.ExitCode(1)
			}
			return nil
		},
	}
}

func (a *app) doctor(ctx context.Context, cliVersion string) *doctorReport {
	r := &doctorReport{Checks: []doctorCheck{}}
	sock := a.Socket
	if sock == "" {
		sock = api.SocketPath()
	}
	if by := a.HandedOffBy; by != "" && by != cliVersion {
		r.add("stepupctl", checkWarning, "install stepupctl and stepupctl-inspect together (packaging/install.sh installs both)",
			"stepupctl is %s, the stepupctl-inspect it runs is %s", versionText(by), cliVersion)
		cliVersion = by // the agent against what the user runs
	}
	sockOK := doctorSocket(r, sock)
	var st *stepup.Status
	if sockOK {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var err error
		st, err = (&stepup.Client{Socket: sock}).Status(ctx)
		cancel()
		var de *stepup.DialError
		switch {
		case errors.As(err, &de):
			r.add("agent", checkError, de.Hint(), "%v", de)
			st = nil
		case err != nil:
			r.add("agent", checkError, "restart the agent; its log (journalctl --user -u stepup-agent) says why", "status failed: %v", err)
			st = nil
		}
	} else {
		r.add("agent", checkError, startHint, "no agent to ask (see socket)")
	}
	if st != nil {
		v := cliVersion
		if v == "" {
			v = "unknown"
		}
		if st.Version == cliVersion {
			r.add("agent", checkOK, "", "stepup-agent %s (pid %d) answers; stepupctl is the same version", st.Version, st.PID)
		} else {
			r.add("agent", checkWarning, "install the same version of both; a restart runs the new agent (systemctl --user restart stepup-agent)",
				"stepup-agent %s (pid %d) answers, stepupctl is %s", st.Version, st.PID, v)
		}
		doctorKeychain(r, st.Keychain)
	} else {
		doctorLocalKeychain(ctx, r)
	}
	doctorPrompters(r, st)
	lockOnSleep := doctorPolicy(r, st)
	doctorPAM(r)
	doctorSystemd(ctx, r)
	doctorLock(r, lockOnSleep)
	doctorRemote(r, sock, st)
	return r
}

// doctorSocket checks the socket and its directory the way a client
// should trust them: the user's, and nobody else may write the directory.
func doctorSocket(r *doctorReport, sock string) bool {
	uid := os.Getuid()
	dir := filepath.Dir(sock)
	di, err := os.Lstat(dir)
	if err != nil {
		r.add("socket", checkError, startHint, "%s: no such directory: no agent has run here", dir)
		return false
	}
	if dst, ok := di.Sys().(*syscall.Stat_t); ok && int(dst.Uid) != uid {
		r.add("socket", checkError, "someone else made "+dir+": do not use it; set XDG_RUNTIME_DIR (log in through PAM/systemd) or STEPUP_AUTH_SOCK to a directory of yours",
			"%s belongs to uid %d, not to you (uid %d): another user could serve a fake agent there", dir, dst.Uid, uid)
		return false
	}
	if !di.IsDir() {
		r.add("socket", checkError, "remove it and restart the agent", "%s is not a directory", dir)
		return false
	}
	if di.Mode().Perm()&0o022 != 0 {
		r.add("socket", checkError, "chmod 700 "+dir+" and restart the agent",
			"%s has mode %04o: others can write to it and replace the socket", dir, di.Mode().Perm())
		return false
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		r.add("socket", checkError, startHint, "no socket at %s: the agent is not running", sock)
		return false
	}
	if fi.Mode().Type() != fs.ModeSocket {
		r.add("socket", checkError, "remove it and restart the agent", "%s is not a socket (%s)", sock, fi.Mode().Type())
		return false
	}
	if fst, ok := fi.Sys().(*syscall.Stat_t); ok && int(fst.Uid) != uid {
		r.add("socket", checkError, "do not use it: stop whatever serves it and start your own agent",
			"%s belongs to uid %d, not to you (uid %d)", sock, fst.Uid, uid)
		return false
	}
	if fi.Mode().Perm()&0o077 != 0 {
		r.add("socket", checkError, "restart the agent (it creates its socket 0600); do not chmod it wider",
			"%s has mode %04o, want 0600: other users may connect", sock, fi.Mode().Perm())
		return true
	}
	r.add("socket", checkOK, "", "%s (0600, directory %04o, yours)", sock, di.Mode().Perm())
	return true
}

func doctorKeychain(r *doctorReport, k api.KeychainStatus) {
	switch {
	case !k.Available:
		r.add("keychain", checkError, "start a Secret Service (gnome-keyring-daemon) in this session, or restart the agent with --keychain file",
			"%s is not available: tokens, signing keys and credentials cannot be kept", k.Backend)
	case k.Backend == "memory":
		r.add("keychain", checkWarning, "restart the agent with --keychain auto",
			"memory: credentials, signing keys and tokens are lost when the agent stops")
	case k.Backend == "file":
		r.add("keychain", checkWarning, "for encryption at rest run a Secret Service (gnome-keyring) and restart with --keychain secretservice",
			"file: persists, in a 0600 file that is not encrypted")
	default:
		msg := k.Backend + ": persists across restarts"
		if k.Warning != "" {
			r.add("keychain", checkWarning, "", "%s; %s", msg, k.Warning)
			return
		}
		r.add("keychain", checkOK, "", "%s", msg)
	}
}

// doctorLocalKeychain says, with no agent to ask, what a keychain
// backend would find in this session: a Secret Service on the session
// bus, or nothing (auto then keeps an unencrypted file, and
// --keychain secretservice does not start).
func doctorLocalKeychain(ctx context.Context, r *doctorReport) {
	if runtime.GOOS == "darwin" {
		r.add("keychain", checkOK, "", "the macOS Keychain (the agent did not answer; not checked further)")
		return
	}
	const noSS = "no Secret Service in this session: --keychain secretservice will not start, --keychain auto keeps everything in an unencrypted 0600 file"
	const ssHint = "in a desktop session, start gnome-keyring (Debian: apt install gnome-keyring); without one, start the agent with --keychain file"
	addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	if addr == "" {
		r.add("keychain", checkWarning, ssHint, "%s (DBUS_SESSION_BUS_ADDRESS is not set)", noSS)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		r.add("keychain", checkWarning, ssHint, "%s (the session bus does not answer: %v)", noSS, err)
		return
	}
	defer conn.Close()
	var owned bool
	var activatable []string
	bus := conn.BusObject()
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, "org.freedesktop.secrets").Store(&owned); err == nil && owned {
		r.add("keychain", checkOK, "", "a Secret Service runs on the session bus; --keychain auto uses it (the agent did not answer to say which it uses)")
		return
	}
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.ListActivatableNames", 0).Store(&activatable); err == nil {
		for _, n := range activatable {
			if n == "org.freedesktop.secrets" {
				r.add("keychain", checkOK, "", "the session bus starts a Secret Service on demand; --keychain auto uses it")
				return
			}
		}
	}
	r.add("keychain", checkWarning, ssHint, "%s (nothing owns org.freedesktop.secrets on the session bus)", noSS)
}

// doctorPrompters reports the agent's driver and which prompt programs
// can reach this terminal or display (as a prompt started for this
// stepupctl would).
func doctorPrompters(r *doctorReport, st *stepup.Status) {
	if st != nil && st.Prompter != "" {
		if st.Prompter == "none" {
			r.add("prompter", checkWarning, "restart the agent without --prompter none (or set prompt.driver: auto); stepupctl prompt still answers on its own terminal",
				"the agent's prompter is none: programs asking for a prompt get 4009 no_prompter")
		} else {
			r.add("prompter", checkOK, "", "the agent prompts with %s", st.Prompter)
		}
	}
	tty := ""
	if f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0); err == nil {
		if term.IsTerminal(int(f.Fd())) {
			tty = "/dev/tty"
		}
		f.Close()
	}
	display := os.Getenv("WAYLAND_DISPLAY")
	if display == "" {
		display = os.Getenv("DISPLAY")
	}
	reach := 0
	look := func(names ...string) string {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
		}
		return ""
	}
	if p := look("pinentry-tty", "pinentry-curses"); p != "" {
		if tty != "" {
			r.add("prompter", checkOK, "", "%s can ask on this terminal", filepath.Base(p))
			reach++
		} else {
			r.add("prompter", checkWarning, "", "%s is installed but there is no terminal here", filepath.Base(p))
		}
	}
	if runtime.GOOS != "darwin" {
		for _, g := range []string{"pinentry-gnome3", "pinentry-qt", "pinentry-gtk-2", "zenity"} {
			p := look(g)
			if p == "" {
				continue
			}
			if display != "" {
				r.add("prompter", checkOK, "", "%s can show a window on display %s", g, display)
				reach++
			} else {
				r.add("prompter", checkWarning, "", "%s is installed but DISPLAY and WAYLAND_DISPLAY are not set", g)
			}
		}
	} else if look("osascript") != "" {
		r.add("prompter", checkOK, "", "osascript can show a dialog")
		reach++
	}
	if tty != "" {
		r.add("prompter", checkOK, "", "stepupctl can answer a prompt on this terminal itself (custom UI)")
		reach++
	}
	if reach == 0 {
		var why []string
		if tty == "" {
			why = append(why, "no terminal")
		}
		if display == "" {
			why = append(why, "no display")
		}
		if look("pinentry", "pinentry-tty", "pinentry-curses", "zenity") == "" {
			why = append(why, "no pinentry or zenity on PATH")
		}
		r.add("prompter", checkError, "run from a terminal, or on a desktop with pinentry-gtk2 or zenity installed (Debian: apt install pinentry-curses); programs without either can use startVerification/completeVerification",
			"no prompter can reach you here: %s", strings.Join(why, ", "))
	}
}

// doctorPolicy loads the policy the agent uses (or would use) and reports
// each error with its line. It returns lockOnSleep.
func doctorPolicy(r *doctorReport, st *stepup.Status) bool {
	path := defaultPolicyPath()
	if st != nil && st.Policy.Path != "" {
		path = st.Policy.Path
	}
	p, exists, err := policy.Load(path)
	switch {
	case err != nil:
		var list policy.ErrorList
		if errors.As(err, &list) && len(list) > 0 {
			for _, e := range list {
				r.add("policy", checkError, "", "%s: %v", path, e)
			}
		} else {
			r.add("policy", checkError, "", "%v", err)
		}
		hint := "fix the file; an agent starting now refuses it, a running one keeps its last good policy"
		r.Checks[len(r.Checks)-1].Hint = hint
	case !exists:
		r.add("policy", checkOK, "", "no %s: the built-in defaults (see stepup-policy(5))", path)
	default:
		r.add("policy", checkOK, "", "%s: valid, %d scope entries", path, len(p.Scopes))
	}
	if st != nil && st.Policy.Error != "" {
		r.add("policy", checkWarning, "the agent reloads the file when it changes; once it validates the error goes away",
			"the agent reports: %s", st.Policy.Error)
	}
	if p == nil {
		return true
	}
	return p.LockOnSleep == nil || *p.LockOnSleep
}

func doctorPAM(r *doctorReport) {
	if runtime.GOOS == "darwin" {
		return
	}
	if _, err := os.Stat("/etc/pam.d/stepup-agent"); err == nil {
		r.add("pam", checkOK, "", "/etc/pam.d/stepup-agent: the password method is offered")
	} else {
		r.add("pam", checkWarning, "install packaging/pam/stepup-agent as /etc/pam.d/stepup-agent (the Debian package does)",
			"no /etc/pam.d/stepup-agent: the password method is not offered")
	}
	var dirs []string
	if p, err := exec.LookPath("stepup-agent"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	dirs = append(dirs, "/usr/bin", "/usr/local/bin", "/usr/libexec/stepup-agent")
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, "stepup-pam-helper")); err == nil && fi.Mode()&0o111 != 0 {
			r.add("pam", checkOK, "", "%s: the password method works under the hardened unit", filepath.Join(d, "stepup-pam-helper"))
			return
		}
	}
	r.add("pam", checkWarning, "install the Debian package, or build cmd/stepup-pam-helper next to stepup-agent",
		"no stepup-pam-helper next to stepup-agent: the password method needs a cgo build of the agent")
}

func doctorSystemd(ctx context.Context, r *doctorReport) {
	if runtime.GOOS == "darwin" {
		return
	}
	config := os.Getenv("XDG_CONFIG_HOME")
	if config == "" {
		home, _ := os.UserHomeDir()
		config = filepath.Join(home, ".config")
	}
	found := ""
	for _, d := range []string{filepath.Join(config, "systemd", "user"), "/etc/systemd/user", "/usr/local/lib/systemd/user", "/usr/lib/systemd/user"} {
		if _, err := os.Stat(filepath.Join(d, "stepup-agent.socket")); err == nil {
			found = d
			break
		}
	}
	if found == "" {
		r.add("systemd", checkWarning, "install the Debian package or run packaging/install.sh, then: systemctl --user enable --now stepup-agent.socket",
			"no stepup-agent.socket user unit: the agent is not started at login")
		return
	}
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		r.add("systemd", checkOK, "", "units in %s (no systemctl to ask whether they are enabled)", found)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, systemctl, "--user", "is-enabled", "stepup-agent.socket").Output()
	state := strings.TrimSpace(string(out))
	switch state {
	case "enabled", "static", "linked", "enabled-runtime":
		r.add("systemd", checkOK, "", "units in %s; stepup-agent.socket is %s", found, state)
	case "":
		r.add("systemd", checkWarning, "log in with a systemd user session (loginctl enable-linger for SSH-only use)",
			"units in %s, but no systemd user manager answers", found)
	default:
		r.add("systemd", checkWarning, "systemctl --user enable --now stepup-agent.socket",
			"units in %s; stepup-agent.socket is %s", found, state)
	}
}

func doctorLock(r *doctorReport, lockOnSleep bool) {
	if !lockOnSleep {
		r.add("lock", checkWarning, "set lockOnSleep: true in the policy", "lockOnSleep is false: tokens survive sleep and screen lock")
		return
	}
	if runtime.GOOS == "darwin" {
		r.add("lock", checkWarning, "", "macOS: no sleep or screen-lock hook; tokens expire on their own")
		return
	}
	if _, err := os.Stat("/run/systemd/seats"); err != nil {
		r.add("lock", checkWarning, "tokens still expire on their own; stepupctl lock revokes them by hand",
			"lockOnSleep is on, but logind does not run here: sleep and screen lock cannot revoke tokens")
		return
	}
	r.add("lock", checkOK, "", "lockOnSleep: sleep and screen lock revoke every token (logind)")
}

func doctorRemote(r *doctorReport, sock string, st *stepup.Status) {
	if st != nil && st.Remote != "" {
		// A server's view: STEPUP_AUTH_SOCK is the forwarded socket.
		r.add("remote", checkOK, "", "%s is a forwarded agent (%s): prompts appear on your workstation; enroll, remove, lock and unlock are refused from here", sock, st.Remote)
		return
	}
	remote := filepath.Join(filepath.Dir(sock), "remote.sock")
	fi, err := os.Lstat(remote)
	if err != nil {
		r.add("remote", checkOK, "", "no remote socket (%s): step-up from SSH servers is off", remote)
		return
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm()&0o077 != 0 {
		r.add("remote", checkError, "restart the agent; it creates the remote socket 0600",
			"%s has mode %s, want a 0600 socket", remote, fi.Mode())
		return
	}
	r.add("remote", checkOK, "", "%s: forward it with ssh -R /run/user/UID/stepup/agent.sock:%s HOST", remote, remote)
}

// versionText is a version from the environment as doctor prints it:
// as it is when it looks like one, quoted otherwise (a terminal escape or
// a newline set by hand must not make lines of the report).
func versionText(v string) string {
	for _, r := range v {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune(".+~-_", r)) {
			return strconv.Quote(v)
		}
	}
	return v
}
