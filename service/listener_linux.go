package service

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/stepup-agent/stepup-agent/sockpath"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Listener returns the socket the service manager passed by socket
// activation (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES),
// and true. It takes the descriptor named FDName ("agent"), or the only
// one when a single descriptor comes without that name. The socket must be
// a listening Unix stream socket whose path passes sockpath.CheckInherited;
// otherwise Listener returns an error that says what to fix, and the agent
// should exit rather than serve a socket others can reach.
//
// Without socket activation it returns (nil, false, nil) and the agent
// binds its own socket. Either way the LISTEN_* variables are removed from
// the environment, so programs the agent starts do not see them.
//
// It uses activation.Files rather than ListenersWithNames because the
// latter silently drops a descriptor that is not a stream listener; here
// that is an error worth a clear message.
func Listener(log *zap.Logger) (net.Listener, bool, error) {
	ln, remote, ok, err := Listeners(log, "")
	if remote != nil {
		remote.Close()
	}
	return ln, ok, err
}

// Listeners is Listener that also returns the remote socket, or nil when
// the service manager passed none. The remote socket is the descriptor
// bound at remotePath (a second ListenStream= of stepup-agent.socket,
// whose FileDescriptorName= names every socket of the unit alike), or one
// named RemoteFDName (a socket unit of its own). It is checked as the main
// one is, and never taken for the main socket.
func Listeners(log *zap.Logger, remotePath string) (main, remote net.Listener, activated bool, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	all := activation.Files(true) // true: unset LISTEN_*
	if len(all) == 0 {
		return nil, nil, false, nil
	}
	var files, remotes []*os.File
	for _, f := range all {
		if f.Name() == RemoteFDName || remotePath != "" && boundPath(f) == remotePath {
			remotes = append(remotes, f)
		} else {
			files = append(files, f)
		}
	}
	if len(remotes) > 1 {
		closeAll(all)
		return nil, nil, true, fmt.Errorf("socket activation passed more than one remote socket (named %q or bound at %s); keep one", RemoteFDName, remotePath)
	}
	if len(files) == 0 {
		closeAll(all)
		return nil, nil, true, fmt.Errorf("socket activation passed only the remote socket; the agent needs its socket too: enable stepup-agent.socket (FileDescriptorName=%s)", FDName)
	}
	if len(remotes) == 1 {
		defer remotes[0].Close()
		remote, err = inheritedListener(remotes[0])
		if err != nil {
			closeAll(files)
			return nil, nil, true, err
		}
		log.Info("socket activation: serving the inherited remote socket", zap.String("socket", remote.Addr().String()))
	}
	main, activated, err = pickListener(log, files)
	if err != nil && remote != nil {
		remote.Close()
		remote = nil
	}
	return main, remote, activated, err
}

func pickListener(log *zap.Logger, files []*os.File) (net.Listener, bool, error) {
	var pick *os.File
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.Name())
		if f.Name() == FDName {
			if pick != nil {
				closeAll(files)
				return nil, true, fmt.Errorf("socket activation passed more than one socket named %q; the socket unit must have exactly one ListenStream=", FDName)
			}
			pick = f
		}
	}
	if pick == nil {
		if len(files) != 1 {
			closeAll(files)
			return nil, true, fmt.Errorf("socket activation passed %d sockets (%s) and none is named %q; set FileDescriptorName=%s in the socket unit", len(files), strings.Join(names, ", "), FDName, FDName)
		}
		pick = files[0]
		log.Info("socket activation: taking the only socket passed", zap.String("fdName", pick.Name()))
	}
	for _, f := range files {
		if f != pick {
			log.Warn("socket activation: ignoring an extra descriptor", zap.String("fdName", f.Name()))
			f.Close()
		}
	}
	defer pick.Close() // FileListener dups it
	ln, err := inheritedListener(pick)
	if err != nil {
		return nil, true, err
	}
	log.Info("socket activation: serving the inherited socket", zap.String("socket", ln.Addr().String()))
	return ln, true, nil
}

// inheritedListener checks f (a listening Unix stream socket whose path
// passes sockpath.CheckInherited) and returns its listener; the caller
// closes f.
func inheritedListener(f *os.File) (net.Listener, error) {
	if err := checkStreamListener(f); err != nil {
		return nil, err
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket activation: cannot use the socket named %q: %w", f.Name(), err)
	}
	path := ""
	if a, ok := ln.Addr().(*net.UnixAddr); ok {
		path = a.Name
	}
	if err := sockpath.CheckInherited(path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// checkStreamListener checks that f is a listening AF_UNIX SOCK_STREAM
// socket.
func checkStreamListener(f *os.File) error {
	fd := int(f.Fd())
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("socket activation: descriptor %q is not a socket: %w", f.Name(), err)
	}
	if dom != unix.AF_UNIX {
		return fmt.Errorf("socket activation: socket %q is not a Unix socket (address family %d); use ListenStream=%%t/stepup/agent.sock", f.Name(), dom)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("socket activation: socket %q: %w", f.Name(), err)
	}
	if typ != unix.SOCK_STREAM {
		return fmt.Errorf("socket activation: socket %q is not a stream socket (type %d); use ListenStream=, not ListenDatagram= or ListenSequentialPacket=", f.Name(), typ)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("socket activation: socket %q: %w", f.Name(), err)
	}
	if acc == 0 {
		return fmt.Errorf("socket activation: socket %q is not listening (Accept=yes in the socket unit passes connections, not the listening socket; use Accept=no)", f.Name())
	}
	return nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// boundPath is the path a Unix socket descriptor is bound at ("" if none).
func boundPath(f *os.File) string {
	sa, err := unix.Getsockname(int(f.Fd()))
	if err != nil {
		return ""
	}
	if u, ok := sa.(*unix.SockaddrUnix); ok {
		return u.Name
	}
	return ""
}
