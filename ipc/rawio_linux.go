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

	// The functions handed to rc.Read and rc.Write are method values
	// made once in newRawIO, and what they work on lives here: a closure
	// made per call would escape to the heap through the RawConn
	// interface, an allocation per read and per write, and so a garbage
	// collection every few thousand requests (docs/BENCHMARKS.md, Notes).
	// Only serve's goroutine reads, and writes hold the connection's
	// write lock, so each half has one user at a time.
	rd     rawRead
	wr     rawWrite
	readFn func(uintptr) bool
	wrFn   func(uintptr) bool
}

// rawRead is the state of one Read.
type rawRead struct {
	b          []byte
	n          int
	errno      syscall.Errno
	wouldBlock bool
}

// rawWrite is the state of one Write.
type rawWrite struct {
	b     []byte
	total int
	wait  bool
	errno syscall.Errno
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
	x.readFn, x.wrFn = x.readOnce, x.writeOnce
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

// readOnce is rc.Read's function: one read(2) into x.rd.b. It returns
// false to wait in the netpoller for the socket to become readable.
func (x *rawIO) readOnce(fd uintptr) bool {
	b := x.rd.b
	for {
		m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if x.noWait {
				x.rd.wouldBlock = true
				return true
			}
			// Nothing there: arm the line deadline, then wait in the
			// netpoller (which calls this again when the socket is
			// readable).
			x.beforeWait()
			return false
		}
		x.rd.n, x.rd.errno = int(m), e
		return true
	}
}

func (x *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	x.rd = rawRead{b: b}
	err := x.rc.Read(x.readFn)
	rd := x.rd
	x.rd = rawRead{} // keep no reference to the caller's buffer
	switch {
	case err != nil:
		return 0, err
	case rd.wouldBlock:
		return 0, errWouldBlock
	case rd.errno != 0:
		return 0, os.NewSyscallError("read", rd.errno)
	case rd.n == 0:
		return 0, io.EOF
	}
	return rd.n, nil
}

// writeOnce is rc.Write's function: write(2) until x.wr.b is written, an
// error, or the socket is full (then it returns !x.wr.wait: wait in the
// netpoller, or give up and let Write arm the deadline first).
func (x *rawIO) writeOnce(fd uintptr) bool {
	w := &x.wr
	for w.total < len(w.b) {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.b[w.total])), uintptr(len(w.b)-w.total))
		switch e {
		case 0:
			w.total += int(m)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return !w.wait
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// try runs one rc.Write of what is left of x.wr.b.
func (x *rawIO) try(wait bool) error {
	x.wr.wait, x.wr.errno = wait, 0
	if err := x.rc.Write(x.wrFn); err != nil {
		return err
	}
	if x.wr.errno != 0 {
		return os.NewSyscallError("write", x.wr.errno)
	}
	return nil
}

// Write writes all of b. A client that does not read its answers gets
// x.timeout to make room, renewed whenever it makes some, before the
// write fails; the deadline is set only while waiting, never on the
// common path.
func (x *rawIO) Write(b []byte) (int, error) {
	x.wr = rawWrite{b: b}
	defer func() { x.wr = rawWrite{} }()
	if err := x.try(false); err != nil || x.wr.total == len(b) {
		return x.wr.total, err
	}
	for {
		before := x.wr.total
		x.nc.SetWriteDeadline(time.Now().Add(x.timeout))
		err := x.try(true)
		if err != nil && x.wr.total > before && isTimeout(err) {
			continue // the client is reading, slowly: wait on
		}
		x.nc.SetWriteDeadline(time.Time{})
		return x.wr.total, err
	}
}
