package peer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file reads a caller's identity as cheaply as the kernel allows: a
// connection costs two getsockopt calls, one read of /proc/PID/stat
// (start time, parent, session and terminal at once), one readlink of
// the executable, one read of the audit session, one read of stat per
// parent, and one pidfd signal check. Paths are built in stack buffers
// and passed to raw system calls, files are read into stack buffers, and
// the Identity and its first parents are one allocation; the executable
// path is the only other one. The command line is read (into a pooled
// buffer) only for an interpreter, whose script names the caller.

func credOf(fd int) (Cred, bool, error) {
	var c unix.Ucred
	if err := getsockopt(fd, unix.SO_PEERCRED, unsafe.Pointer(&c), unsafe.Sizeof(c)); err != nil {
		return Cred{}, false, err
	}
	return Cred{UID: int(c.Uid), GID: int(c.Gid), PID: int(c.Pid)}, true, nil
}

// getsockopt is SOL_SOCKET getsockopt into a caller's value, without the
// heap copies of x/sys/unix's typed wrappers. Like every system call of
// this file but the pidfd_open of a new ancestor, it cannot block, so it
// is made raw: no entersyscall and exitsyscall around it, which, when the
// agent was idle, also woke the runtime's sysmon thread.
func getsockopt(fd, opt int, val unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, uintptr(opt),
		uintptr(val), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// ErrGone: the client exited while it was identified.
var ErrGone = errors.New("the client exited while it was being identified")

// identity is an Identity with room for its first parents, allocated as
// one object.
type identity struct {
	id      Identity
	parents [8]Proc
}

func newIdentity() *Identity {
	b := &identity{}
	b.id.Parents = b.parents[:0:len(b.parents)]
	return &b.id
}

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
	var pfd int32
	pidfd := -1
	if getsockopt(fd, unix.SO_PEERPIDFD, unsafe.Pointer(&pfd), unsafe.Sizeof(pfd)) == nil {
		pidfd = int(pfd)
	} else if p, err := unix.PidfdOpen(cred.PID, 0); err == nil {
		pidfd = p
	}
	if pidfd >= 0 {
		defer closeFD(pidfd)
	}
	id := newIdentity()
	id.UID, id.GID, id.Boot = cred.UID, cred.GID, bootID()
	// The pidfd is polled with the parent chain's, after every read.
	if err := readProc(id, cred.PID, pidfd); err != nil {
		return nil, err
	}
	if len(id.Parents) == 0 {
		id.Parents = nil
	}
	return id, nil
}

// IdentifyPID reads the identity of a running process by its pid, for
// tests and for the agent's own process. It has the race a bare pid has:
// use Identify for a connection.
func IdentifyPID(pid int) (*Identity, error) {
	id := newIdentity()
	id.Boot = bootID()
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil {
		return nil, err
	}
	id.UID, id.GID = int(st.Uid), int(st.Gid)
	if err := readProc(id, pid, -1); err != nil {
		return nil, err
	}
	if len(id.Parents) == 0 {
		id.Parents = nil
	}
	return id, nil
}

var bootID = sync.OnceValue(func() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
})

// procPath writes "/proc/PID/NAME" and a NUL into b, and returns a
// pointer to it for a system call.
func procPath(b *[64]byte, pid int, name string) *byte {
	p := append(b[:0], "/proc/"...)
	p = strconv.AppendUint(p, uint64(pid), 10)
	p = append(p, '/')
	p = append(p, name...)
	p = append(p, 0)
	return &p[0]
}

// readProcFile reads /proc/PID/NAME into buf with one read, which /proc
// answers whole for the small files read here. The files read this way
// (stat, sessionid) are made by the kernel without waiting on the
// process, so the calls are raw: they skip telling the Go scheduler of a
// system call, which would wake its monitor thread on an idle agent (see
// ipc's rawIO). The command line, which can wait on the process's memory
// map lock, goes through readProcFileBlocking.
func readProcFile(pid int, name string, buf []byte) (int, error) {
	return readProcFileWith(unix.RawSyscall6, pid, name, buf)
}

func readProcFileBlocking(pid int, name string, buf []byte) (int, error) {
	return readProcFileWith(unix.Syscall6, pid, name, buf)
}

type syscall6 func(trap, a1, a2, a3, a4, a5, a6 uintptr) (r1, r2 uintptr, err unix.Errno)

func readProcFileWith(sys syscall6, pid int, name string, buf []byte) (int, error) {
	var pb [64]byte
	path := procPath(&pb, pid, name)
	r, _, e := sys(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(path)),
		unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		return 0, fmt.Errorf("/proc/%d/%s: %w", pid, name, e)
	}
	defer closeFD(int(r))
	for {
		n, _, e := sys(unix.SYS_READ, r, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, fmt.Errorf("/proc/%d/%s: %w", pid, name, e)
		}
		return int(n), nil
	}
}

// readProcLink reads the link /proc/PID/NAME into buf.
func readProcLink(pid int, name string, buf []byte) (int, error) {
	var pb [64]byte
	path := procPath(&pb, pid, name)
	r, _, e := unix.RawSyscall6(unix.SYS_READLINKAT, atFDCWD, uintptr(unsafe.Pointer(path)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// stat holds the fields of /proc/PID/stat that identify uses.
type stat struct {
	ppid, sid int
	tty       uint64
	start     uint64
}

var errMalformed = errors.New("malformed")

func readStat(pid int) (stat, error) {
	var buf [1024]byte
	n, err := readProcFile(pid, "stat", buf[:])
	if err != nil {
		return stat{}, err
	}
	s, ok := parseStat(buf[:n])
	if !ok {
		return stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, errMalformed)
	}
	return s, nil
}

// parseStat reads /proc/PID/stat: pid (comm) state ppid pgrp session
// tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime
// cstime priority nice num_threads itrealvalue starttime ...; comm may
// hold spaces and parentheses, so fields count from the last ')'.
func parseStat(b []byte) (stat, bool) {
	i := len(b) - 1
	for i >= 0 && b[i] != ')' {
		i--
	}
	if i < 0 {
		return stat{}, false
	}
	b = b[i+1:]
	var s stat
	for f := 0; f <= 19; f++ {
		for len(b) > 0 && b[0] == ' ' {
			b = b[1:]
		}
		j := 0
		for j < len(b) && b[j] != ' ' && b[j] != '\n' {
			j++
		}
		if j == 0 {
			return stat{}, false
		}
		field := b[:j]
		b = b[j:]
		var ok bool
		switch f {
		case 1:
			var v uint64
			v, ok = parseUint(field)
			s.ppid = int(v)
		case 3:
			var v uint64
			v, ok = parseUint(field)
			s.sid = int(v)
		case 4:
			// tty_nr is printed as a signed int.
			neg := field[0] == '-'
			if neg {
				field = field[1:]
			}
			var v uint64
			v, ok = parseUint(field)
			if neg {
				v = -v
			}
			s.tty = uint64(uint32(v))
		case 19:
			s.start, ok = parseUint(field)
		default:
			continue
		}
		if !ok {
			return stat{}, false
		}
	}
	return s, true
}

// parseUint parses decimal digits that fit in 63 bits.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// noAuditSession is /proc/PID/sessionid when no login set one.
const noAuditSession = 1<<32 - 1

// maxCmdline bounds how much of /proc/PID/cmdline is read.
const maxCmdline = 32 << 10

var cmdlineBufs = sync.Pool{New: func() any { return new([maxCmdline]byte) }}

// readProc reads process pid into id. self is a pidfd of pid, or -1:
// readProc fails with ErrGone when it says the process exited by the end
// of the reads.
func readProc(id *Identity, pid, self int) error {
	st, err := readStat(pid)
	if err != nil {
		return err
	}
	id.Proc = Proc{PID: pid, Start: st.start}
	var lb [4096]byte
	if n, err := readProcLink(pid, "exe", lb[:]); err == nil {
		// A deleted or replaced file reads "PATH (deleted)": keep it, it
		// is what ran, and it matches nothing installed.
		if n < len(lb) {
			id.Executable = string(lb[:n])
		} else if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil {
			id.Executable = exe
		}
	}
	if id.Executable != "" {
		if _, ok := interpreterOf(id.Executable); ok {
			base := "/proc/" + strconv.Itoa(pid)
			if argv := readCmdline(pid); len(argv) > 1 {
				cwd, _ := os.Readlink(base + "/cwd")
				id.Script = scriptOf(id.Executable, argv, cwd, base+"/root")
			}
		}
	}
	var gone bool
	id.Parents, gone = parents(id.Parents, st, self)
	if gone {
		return ErrGone
	}
	id.Session = sessionOf(pid, st, id.Parents)
	return nil
}

func readCmdline(pid int) []string {
	buf := cmdlineBufs.Get().(*[maxCmdline]byte)
	defer cmdlineBufs.Put(buf)
	n, err := readProcFileBlocking(pid, "cmdline", buf[:])
	if err != nil {
		return nil
	}
	s := strings.TrimRight(string(buf[:n]), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

func sessionOf(pid int, st stat, chain []Proc) LoginSession {
	var buf [32]byte
	if n, err := readProcFile(pid, "sessionid", buf[:]); err == nil {
		b := buf[:n]
		for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
			b = b[:len(b)-1]
		}
		if v, ok := parseUint(b); ok && v != noAuditSession {
			return LoginSession{Kind: SessionAudit, ID: v}
		}
	}
	if st.sid > 0 {
		// A terminal's number is reused once it closes, so a terminal
		// names a session only together with the start time of its
		// session's leader (the shell that opened it): pts/3 of a new
		// login is another session.
		if start, ok := leaderStart(pid, st, chain); ok {
			if st.tty != 0 {
				return LoginSession{Kind: SessionTTY, ID: st.tty, Start: start}
			}
			return LoginSession{Kind: SessionSID, ID: uint64(st.sid), Start: start}
		}
	}
	return treeOf(pid, st, chain)
}

// treeOf is the session of a caller whose session leader cannot be read:
// session 0 (the children of an init that never called setsid, or of a
// leader outside the agent's pid namespace) or a leader that has exited.
// It is the process tree under the caller's topmost ancestor in the same
// kernel session and on the same terminal: a part of the caller's real
// session, named by a process that is alive (its pid and start time), so
// it admits no one outside that session, and commands run by one script
// still share it.
func treeOf(pid int, st stat, chain []Proc) LoginSession {
	top, ppid := Proc{PID: pid, Start: st.start}, st.ppid
	for _, p := range chain {
		ps, err := readStat(p.PID)
		if p.PID != ppid || err != nil || ps.start != p.Start || ps.sid != st.sid || ps.tty != st.tty {
			break
		}
		top, ppid = p, ps.ppid
	}
	// The chain leaves out init; an init in the caller's session (one
	// that never called setsid, as in many containers and VMs) is the
	// top of the tree.
	if ppid == 1 {
		if ps, err := readStat(1); err == nil && ps.sid == st.sid && ps.tty == st.tty {
			top = Proc{PID: 1, Start: ps.start}
		}
	}
	return LoginSession{Kind: SessionTree, ID: uint64(top.PID), Start: top.Start}
}

// leaderStart is the start time of the caller's session leader. The
// leader is most often the caller or one of its parents, whose start times
// are already read.
func leaderStart(pid int, st stat, chain []Proc) (uint64, bool) {
	if st.sid == pid {
		return st.start, true
	}
	for _, p := range chain {
		if p.PID == st.sid {
			return p.Start, true
		}
	}
	return ancestors.leaderStart(st.sid)
}

// parents walks the parent chain from st, appending to out, and reports
// whether the pidfd self (-1 for none) says its process has exited.
func parents(out []Proc, st stat, self int) ([]Proc, bool) {
	return ancestors.walk(out, st, self)
}

// exited polls pidfd fd (-1: none) for its process's exit.
func exited(fd int) bool {
	if fd < 0 {
		return false
	}
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := pollNow(fds[:])
	return err == nil && n > 0
}

// pollNow is poll(2) with a zero timeout: it returns at once.
func pollNow(fds []unix.PollFd) (int, error) {
	if len(fds) == 0 {
		return 0, nil
	}
	var now unix.Timespec
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)),
		uintptr(unsafe.Pointer(&now)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// closeFD closes a descriptor of this file's own (a pidfd, a /proc file).
func closeFD(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// walkUncached walks the parent chain from st by reading each parent's
// stat. A parent that started after its child is not its parent (the
// child was reparented and the pid reused): the walk stops there.
func walkUncached(out []Proc, st stat) []Proc {
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

// ancestorCache remembers, for the processes met as parents (shells,
// terminals, session leaders: few, and the same for many connections),
// their start time and parent, each with a pidfd that pins it. A
// connection's chain then costs one read of the caller's stat and one
// poll of the chain's pidfds, instead of one read of stat per parent
// (each about as costly as the whole answer to a request).
//
// Why a cached entry is still true when its pidfd says its process is
// alive: the pid then names that very process (a pid is reused only after
// its process died), its start time never changes, and its parent changes
// only when that parent dies (the kernel reparents it), whose own pidfd
// then says so. So a chain whose every pidfd is alive at the poll, after
// the caller's stat was read, is the chain a fresh walk would read; one
// with a dead entry is walked again from /proc. Without pidfds (Linux
// before 5.3) every walk reads /proc.
type ancestorCache struct {
	mu    sync.Mutex
	m     map[int]*ancestor
	order []int // pids in insertion order, for eviction
	off   bool  // pidfd_open is not available
}

type ancestor struct {
	start uint64
	ppid  int
	pidfd int
}

// maxAncestors bounds the cache, and so the descriptors it holds.
const maxAncestors = 128

var ancestors = &ancestorCache{m: map[int]*ancestor{}}

// load reads pid's stat into the cache. The pidfd is opened first, so
// that the stat read is of the process it pins when the later poll finds
// that process alive.
func (c *ancestorCache) load(pid int) (*ancestor, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			c.off = true
		}
		return nil, err
	}
	st, err := readStat(pid)
	if err != nil {
		closeFD(fd)
		return nil, err
	}
	for len(c.order) >= maxAncestors {
		c.evict(c.order[0])
	}
	a := &ancestor{start: st.start, ppid: st.ppid, pidfd: fd}
	c.m[pid] = a
	c.order = append(c.order, pid)
	return a, nil
}

func (c *ancestorCache) evict(pid int) {
	if a, ok := c.m[pid]; ok {
		closeFD(a.pidfd)
		delete(c.m, pid)
	}
	for i, p := range c.order {
		if p == pid {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

func (c *ancestorCache) get(pid int) (*ancestor, error) {
	if a, ok := c.m[pid]; ok {
		return a, nil
	}
	return c.load(pid)
}

// alive polls fds, evicts the entries of pids (the first len(pids) of
// fds) whose process has exited and returns the index of the first of
// them, or -1.
func (c *ancestorCache) alive(fds []unix.PollFd, pids []int) int {
	for {
		_, err := pollNow(fds)
		if err != unix.EINTR {
			break
		}
	}
	first := -1
	for i := range pids {
		if fds[i].Revents != 0 {
			if first < 0 {
				first = i
			}
			c.evict(pids[i])
		}
	}
	return first
}

func (c *ancestorCache) walk(out []Proc, st stat, self int) ([]Proc, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off {
		out = walkUncached(out, st)
		return out, exited(self)
	}
	base := len(out)
	var fds [MaxParents + 1]unix.PollFd
	var pids [MaxParents + 1]int
	for try := 0; try < 2; try++ {
		out = out[:base]
		n := 0
		child := ancestor{start: st.start, ppid: st.ppid}
		for len(out)-base < MaxParents && child.ppid > 1 {
			a, err := c.get(child.ppid)
			if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				// Not a parent gone: read as without a cache.
				out = walkUncached(out[:base], st)
				return out, exited(self)
			}
			if err != nil || a.start > child.start {
				break
			}
			out = append(out, Proc{PID: child.ppid, Start: a.start})
			fds[n] = unix.PollFd{Fd: int32(a.pidfd), Events: unix.POLLIN}
			pids[n] = child.ppid
			n++
			child = *a
		}
		if c.off {
			out = walkUncached(out[:base], st)
			return out, exited(self)
		}
		k := n
		if self >= 0 {
			fds[k] = unix.PollFd{Fd: int32(self), Events: unix.POLLIN}
			k++
		}
		dead := c.alive(fds[:k], pids[:n])
		if self >= 0 && fds[n].Revents != 0 {
			return out, true
		}
		if dead < 0 {
			return out, false
		}
		if try > 0 {
			// An ancestor exited while the chain was read (or is a
			// zombie): read the chain from /proc, as without a cache.
			break
		}
	}
	out = walkUncached(out[:base], st)
	return out, exited(self)
}

// leaderStart returns the start time of session leader sid.
func (c *ancestorCache) leaderStart(sid int) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.off {
		for try := 0; try < 2; try++ {
			a, err := c.get(sid)
			if err != nil {
				break
			}
			fds := [1]unix.PollFd{{Fd: int32(a.pidfd), Events: unix.POLLIN}}
			pids := [1]int{sid}
			if c.alive(fds[:], pids[:]) < 0 {
				return a.start, true
			}
		}
	}
	lead, err := readStat(sid)
	return lead.start, err == nil
}

// atFDCWD is AT_FDCWD as a system call argument.
var atFDCWD = func() uintptr { v := unix.AT_FDCWD; return uintptr(v) }()
