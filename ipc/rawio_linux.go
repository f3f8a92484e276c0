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
	nc net.Conn
	rc syscall.RawConn
}

// newRawIO returns the reader and writer of nc's requests and answers;
// raw reports whether they are rawIO (whose Write bounds its own waits).
func newRawIO(nc net.Conn) (r io.Reader, w io.Writer, raw bool) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return nc, nc, false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nc, nc, false
	}
	x := &rawIO{nc: nc, rc: rc}
	return x, x, true
}

func (x *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := x.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the netpoller
			}
			n, errno = int(m), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b. A client that does not read its answers gets
// writeTimeout to make room before the write fails; the deadline is set
// only while waiting, never on the common path.
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
	x.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := try(true)
	x.nc.SetWriteDeadline(time.Time{})
	return total, err
}
