package ctl

import (
	"bufio"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// readSecret reads one line from the terminal with echo off. Ctrl-D on an
// empty line is io.EOF. (x/term's ReadPassword spins on a 0-byte read at
// Ctrl-D instead of returning, so this is done here.)
func readSecret(tty *os.File) (string, error) {
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return "", err
	}
	st := *old
	st.Lflag &^= unix.ECHO
	st.Lflag |= unix.ICANON | unix.ISIG
	st.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, ioctlSetTermios, &st); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, ioctlSetTermios, old)
	line, err := bufio.NewReader(eofReader{tty}).ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// eofReader turns a terminal's 0-byte read (Ctrl-D) into io.EOF.
type eofReader struct{ f *os.File }

func (r eofReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return n, err
}
