package peer

import (
	"errors"

	"golang.org/x/sys/unix"
)

func credOf(fd int) (Cred, bool, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Cred{}, false, err
	}
	pid, _ := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	c := Cred{UID: int(cred.Uid), PID: pid}
	if cred.Ngroups > 0 {
		c.GID = int(cred.Groups[0])
	}
	return c, true, nil
}

// ErrGone: the client exited while it was identified.
var ErrGone = errors.New("the client exited while it was being identified")

// identify reads what macOS gives without cgo: pid, start time, tty,
// session and parents from sysctl kern.proc.pid. The executable is not
// known (proc_pidpath needs cgo), so client binding acts as process
// binding there.
func identify(fd int) (*Identity, error) {
	cred, _, err := credOf(fd)
	if err != nil {
		return nil, err
	}
	id := &Identity{UID: cred.UID, GID: cred.GID}
	if cred.PID <= 0 {
		return id, nil
	}
	return id, readProc(id, cred.PID)
}

// IdentifyPID reads the identity of a running process by its pid.
func IdentifyPID(pid int) (*Identity, error) {
	id := &Identity{}
	k, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return nil, err
	}
	id.UID = int(k.Eproc.Ucred.Uid)
	return id, readProc(id, pid)
}

func startOf(k *unix.KinfoProc) uint64 {
	t := k.Proc.P_starttime
	return uint64(t.Sec)*1e6 + uint64(t.Usec)
}

func readProc(id *Identity, pid int) error {
	k, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil || k.Proc.P_pid != int32(pid) {
		return ErrGone
	}
	id.Proc = Proc{PID: pid, Start: startOf(k)}
	if k.Eproc.Tdev != -1 && k.Eproc.Tdev != 0 {
		id.Session = LoginSession{Kind: SessionTTY, ID: uint64(uint32(k.Eproc.Tdev))}
	} else if sid, err := unix.Getsid(pid); err == nil && sid > 0 {
		if lk, err := unix.SysctlKinfoProc("kern.proc.pid", sid); err == nil && lk.Proc.P_pid == int32(sid) {
			id.Session = LoginSession{Kind: SessionSID, ID: uint64(sid), Start: startOf(lk)}
		}
	}
	child := k
	for len(id.Parents) < MaxParents && child.Eproc.Ppid > 1 {
		ppid := int(child.Eproc.Ppid)
		p, err := unix.SysctlKinfoProc("kern.proc.pid", ppid)
		if err != nil || p.Proc.P_pid != int32(ppid) || startOf(p) > startOf(child) {
			break
		}
		id.Parents = append(id.Parents, Proc{PID: ppid, Start: startOf(p)})
		child = p
	}
	return nil
}
