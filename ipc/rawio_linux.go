package ipc

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// rawIO reads and writes a connection's non-blocking Unix socket with raw
// read(2) and write(2). They never block, so they need not tell the Go
// scheduler they are system calls: skipping entersyscall/exitsyscall
// (which, when the process was idle, also wakes the runtime's sysmon
// thread, a futex wake-up and a context switch per request) saves about
// 2.6 us of the server's CPU per request on the benchmark VM, 21%, once
// the request path makes no other system call (docs/BENCHMARKS.md, Notes).
// Waiting still goes through the netpoller
// (syscall.RawConn), so deadlines, Close and Shutdown work as with
// net.Conn's own Read and Write.
type rawIO struct {
	nc         net.Conn
	rc         syscall.RawConn
	beforeWait func()        // runs before a read waits (the line deadline)
	timeout    time.Duration // a write fails after this without progress
	// noWait: a read that would wait fails with errWouldBlock instead
	// (the accepting goroutine reads what came with the connection).
	noWait bool
}

// newRawIO returns the reader and writer of nc's requests and answers.
// beforeWait runs before a read waits for the client; a write fails after
// timeout without progress.
func newRawIO(nc net.Conn, beforeWait func(), timeout time.Duration) (r io.Reader, w io.Writer) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return &hookReader{nc: nc, before: beforeWait}, &progressWriter{nc: nc, timeout: timeout}
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return &hookReader{nc: nc, before: beforeWait}, &progressWriter{nc: nc, timeout: timeout}
	}
	x := &rawIO{nc: nc, rc: rc, beforeWait: beforeWait, timeout: timeout}
	return x, x
}

// setNoWait switches r, a reader newRawIO returned, to failing with
// errWouldBlock instead of waiting (on) or back. It reports whether r can.
func setNoWait(r io.Reader, on bool) bool {
	x, ok := r.(*rawIO)
	if ok {
		x.noWait = on
	}
	return ok
}

func (x *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	wouldBlock := false
	err := x.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				if x.noWait {
					wouldBlock = true
					return true
				}
				// Nothing there: arm the line deadline, then wait in
				// the netpoller (which calls this again when the
				// socket is readable).
				x.beforeWait()
				return false
			}
			n, errno = int(m), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case wouldBlock:
		return 0, errWouldBlock
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b. A client that does not read its answers gets
// x.timeout to make room, renewed whenever it makes some, before the
// write fails; the deadline is set only while waiting, never on the
// common path.
func (x *rawIO) Write(b []byte) (int, error) {
	total := 0
	try := func(wait bool) error {
		var errno syscall.Errno
		err := x.rc.Write(func(fd uintptr) bool {
			for total < len(b) {
				m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[total])), uintptr(len(b)-total))
				switch e {
				case 0:
					total += int(m)
				case syscall.EINTR:
				case syscall.EAGAIN:
					return !wait
				default:
					errno = e
					return true
				}
			}
			return true
		})
		if err != nil {
			return err
		}
		if errno != 0 {
			return os.NewSyscallError("write", errno)
		}
		return nil
	}
	if err := try(false); err != nil || total == len(b) {
		return total, err
	}
	for {
		before := total
		x.nc.SetWriteDeadline(time.Now().Add(x.timeout))
		err := try(true)
		if err != nil && total > before && isTimeout(err) {
			continue // the client is reading, slowly: wait on
		}
		x.nc.SetWriteDeadline(time.Time{})
		return total, err
	}
}
