//go:build linux

package remote

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Identify reads, from /proc, the ssh process pid that forwards the
// remote socket: its destination, its terminal and its display. It reads
// only what the kernel shows the agent's own uid (the caller checks that
// the peer's uid is the user's before calling it).
func Identify(pid int) (Conn, error) {
	c := Conn{PID: pid}
	dir := "/proc/" + strconv.Itoa(pid)
	raw, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return c, fmt.Errorf("reading the forwarding process %d: %w", pid, err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	// argv[0] is the process's own to choose; its executable is not.
	if exe, err := os.Readlink(dir + "/exe"); err != nil || !isSSH(exe) {
		return c, nil
	}
	c.Destination, _ = Destination(argv)
	c.TTY = controllingTTY(pid)
	if env, err := os.ReadFile(dir + "/environ"); err == nil {
		for _, kv := range bytes.Split(env, []byte{0}) {
			switch {
			case bytes.HasPrefix(kv, []byte("DISPLAY=")):
				c.Display = string(kv[len("DISPLAY="):])
			case bytes.HasPrefix(kv, []byte("WAYLAND_DISPLAY=")):
				c.WaylandDisplay = string(kv[len("WAYLAND_DISPLAY="):])
			}
		}
	}
	return c, nil
}

// controllingTTY is the path of pid's controlling terminal: the device
// number from /proc/PID/stat, matched against the terminals its standard
// descriptors point at (the name of a pts is not in /proc otherwise).
func controllingTTY(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return ""
	}
	// Fields after the command, which is in parentheses and may hold
	// spaces: state ppid pgrp session tty_nr ...
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 5 {
		return ""
	}
	nr, err := strconv.ParseUint(f[4], 10, 64)
	if err != nil || nr == 0 {
		return ""
	}
	for _, fd := range []string{"0", "1", "2"} {
		p, err := os.Readlink(dir + "/fd/" + fd)
		if err != nil || !strings.HasPrefix(p, "/dev/") {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && uint64(st.Rdev) == nr {
			return p
		}
	}
	return ""
}
