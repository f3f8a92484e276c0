package peer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

func credOf(fd int) (Cred, bool, error) {
	c, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, false, err
	}
	return Cred{UID: int(c.Uid), GID: int(c.Gid), PID: int(c.Pid)}, true, nil
}

// ErrGone: the client exited while it was identified.
var ErrGone = errors.New("the client exited while it was being identified")

// identify reads the caller at fd. A pidfd pins the process while /proc
// is read: SO_PEERPIDFD (Linux 6.5+) names the very process that
// connected; older kernels get pidfd_open on the pid, right after
// SO_PEERCRED. When the pidfd says the process is gone after the reads,
// what was read may belong to another process that got its pid, and
// identify fails. Without pidfds at all (before 5.3) the start time
// alone tells processes apart.
func identify(fd int) (*Identity, error) {
	cred, _, err := credOf(fd)
	if err != nil {
		return nil, err
	}
	pidfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err != nil {
		pidfd, err = unix.PidfdOpen(cred.PID, 0)
		if err != nil {
			pidfd = -1
		}
	}
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	id := &Identity{UID: cred.UID, GID: cred.GID, Boot: bootID()}
	if err := readProc(id, cred.PID); err != nil {
		return nil, err
	}
	if pidfd >= 0 {
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
	}
	return id, nil
}

// IdentifyPID reads the identity of a running process by its pid, for
// tests and for the agent's own process. It has the race a bare pid has:
// use Identify for a connection.
func IdentifyPID(pid int) (*Identity, error) {
	id := &Identity{Boot: bootID()}
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil {
		return nil, err
	}
	id.UID, id.GID = int(st.Uid), int(st.Gid)
	return id, readProc(id, pid)
}

var bootID = sync.OnceValue(func() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
})

// stat holds the fields of /proc/PID/stat that identify uses.
type stat struct {
	ppid, sid int
	tty       uint64
	start     uint64
}

func readStat(pid int) (stat, error) {
	var buf [1024]byte
	b, err := readSmall("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		return stat{}, err
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime priority nice
	// num_threads itrealvalue starttime ...; comm may hold spaces and
	// parentheses, so fields count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	var s stat
	var e1, e2, e3, e4 error
	s.ppid, e1 = strconv.Atoi(string(f[1]))
	s.sid, e2 = strconv.Atoi(string(f[3]))
	var tty int64
	tty, e3 = strconv.ParseInt(string(f[4]), 10, 64)
	s.tty = uint64(uint32(tty))
	s.start, e4 = strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(e1, e2, e3, e4); err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: %v", pid, err)
	}
	return s, nil
}

// readSmall reads a small /proc file into buf.
func readSmall(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// noAuditSession is /proc/PID/sessionid when no login set one.
const noAuditSession = 1<<32 - 1

// maxCmdline bounds how much of /proc/PID/cmdline is read.
const maxCmdline = 32 << 10

func readProc(id *Identity, pid int) error {
	base := "/proc/" + strconv.Itoa(pid)
	st, err := readStat(pid)
	if err != nil {
		return err
	}
	id.Proc = Proc{PID: pid, Start: st.start}
	if exe, err := os.Readlink(base + "/exe"); err == nil {
		// A deleted or replaced file reads "PATH (deleted)": keep it, it
		// is what ran, and it matches nothing installed.
		id.Executable = exe
	}
	if id.Executable != "" {
		if _, ok := interpreterOf(id.Executable); ok {
			if argv := readCmdline(base); len(argv) > 1 {
				cwd, _ := os.Readlink(base + "/cwd")
				id.Script = scriptOf(id.Executable, argv, cwd, base+"/root")
			}
		}
	}
	id.Session = sessionOf(base, st)
	id.Parents = parents(st)
	return nil
}

func readCmdline(base string) []string {
	f, err := os.Open(base + "/cmdline")
	if err != nil {
		return nil
	}
	defer f.Close()
	buf := make([]byte, maxCmdline)
	n, _ := f.Read(buf)
	s := strings.TrimRight(string(buf[:n]), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

func sessionOf(base string, st stat) LoginSession {
	var buf [32]byte
	if b, err := readSmall(base+"/sessionid", buf[:]); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n != noAuditSession {
			return LoginSession{Kind: SessionAudit, ID: n}
		}
	}
	if st.tty != 0 {
		return LoginSession{Kind: SessionTTY, ID: st.tty}
	}
	if st.sid > 0 {
		if lead, err := readStat(st.sid); err == nil {
			return LoginSession{Kind: SessionSID, ID: uint64(st.sid), Start: lead.start}
		}
	}
	return LoginSession{}
}

// parents walks the parent chain from st. A parent that started after
// its child is not its parent (the child was reparented and the pid
// reused): the walk stops there.
func parents(st stat) []Proc {
	var out []Proc
	child := st
	for len(out) < MaxParents && child.ppid > 1 {
		p, err := readStat(child.ppid)
		if err != nil || p.start > child.start {
			break
		}
		out = append(out, Proc{PID: child.ppid, Start: p.start})
		child = p
	}
	return out
}
