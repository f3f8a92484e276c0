package prompt

// Checks run before a prompt program is spawned: a pinentry that cannot
// open its terminal answers "Operation cancelled", and zenity without a
// display exits 1 like a Cancel, so an unreachable terminal or display
// must be found here, not read from their answers.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// checkTTY reports whether path is a terminal the agent may prompt on: a
// character device under /dev, owned by the agent's user, that is a tty.
func checkTTY(path string) error {
	if path == "" {
		return errors.New("the request named no terminal")
	}
	if !filepath.IsAbs(path) || !strings.HasPrefix(filepath.Clean(path), "/dev/") {
		return fmt.Errorf("terminal %q is not a device under /dev", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("terminal %s: %v", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("terminal %s is not a character device", path)
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("terminal %s belongs to uid %d, not to the agent's user", path, st.Uid)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("terminal %s: %v", path, err)
	}
	defer unix.Close(fd)
	if _, err := unix.IoctlGetTermios(fd, ioctlGetTermios); err != nil {
		return fmt.Errorf("%s is not a terminal", path)
	}
	return nil
}

// ttyState is a terminal's settings, saved before a prompt program runs so
// they can be put back if the program dies without restoring them.
type ttyState struct {
	fd int
	t  *unix.Termios
}

func saveTTY(path string) (*ttyState, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &ttyState{fd: fd, t: t}, nil
}

// restore puts the saved settings back.
func (s *ttyState) restore() error {
	return unix.IoctlSetTermios(s.fd, ioctlSetTermios, s.t)
}

func (s *ttyState) close() { unix.Close(s.fd) }

// errRemoteDisplay: an X display on another host, such as the
// localhost:10.0 that ssh -X forwards. The agent has no cookie for it, and
// a request carrying one comes from an SSH session, whose terminal is the
// place to ask.
var errRemoteDisplay = errors.New("the display is forwarded or remote")

// parseXDisplay splits "[host]:number[.screen]".
func parseXDisplay(d string) (host string, num int, err error) {
	i := strings.LastIndex(d, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("DISPLAY %q has no ':'", d)
	}
	host = d[:i]
	n, _, _ := strings.Cut(d[i+1:], ".")
	num, err = strconv.Atoi(n)
	if err != nil || num < 0 || num > 65535 {
		return "", 0, fmt.Errorf("DISPLAY %q has no display number", d)
	}
	return host, num, nil
}

// checkXDisplay reports whether the X display d is a local one the agent
// can reach: it connects to its socket.
func checkXDisplay(d string) error {
	host, num, err := parseXDisplay(d)
	if err != nil {
		return err
	}
	if host != "" && host != "unix" {
		return fmt.Errorf("DISPLAY %s: %w", d, errRemoteDisplay)
	}
	if strings.HasPrefix(host, "/") { // launchd's /private/tmp/com.apple.launchd.X/org.xquartz:0
		return dialCheck(host + ":" + strconv.Itoa(num))
	}
	path := "/tmp/.X11-unix/X" + strconv.Itoa(num)
	err = dialCheck(path)
	if err != nil && runtime.GOOS == "linux" {
		if dialCheck("@"+path) == nil { // the abstract socket of the same name
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("DISPLAY %s: no X server answers on %s", d, path)
	}
	return nil
}

// checkWayland reports whether the Wayland compositor named by
// WAYLAND_DISPLAY answers (a relative name is under the agent's
// XDG_RUNTIME_DIR, as the compositor's clients resolve it).
func checkWayland(name string) error {
	path := name
	if !filepath.IsAbs(path) {
		dir := os.Getenv("XDG_RUNTIME_DIR")
		if dir == "" {
			return fmt.Errorf("WAYLAND_DISPLAY %s: the agent has no XDG_RUNTIME_DIR", name)
		}
		path = filepath.Join(dir, name)
	}
	if err := dialCheck(path); err != nil {
		return fmt.Errorf("WAYLAND_DISPLAY %s: no compositor answers on %s", name, path)
	}
	return nil
}

func dialCheck(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// Values passed in OPTION lines and environment variables: only the
// characters such values have, so no value can smuggle anything else.
func safeValue(v string) bool {
	if v == "" || len(v) > 200 {
		return false
	}
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("._-:/@+,=", c):
		default:
			return false
		}
	}
	return true
}
