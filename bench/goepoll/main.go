//go:build linux

// Command goepoll is bench/echo.c written in Go: one thread (locked),
// level-triggered epoll, non-blocking sockets, no netpoller and no
// goroutine per connection. It measures what a Go server pays per
// request when it waits the way the C floor does (docs/BENCHMARKS.md,
// Notes), against bench/goecho, which waits the plain Go way.
//
// By default its three system calls (epoll_wait, read, write) are raw:
// the runtime is not told the thread is in the kernel, so the thread
// keeps its P while epoll_wait blocks. That is not something a daemon
// can ship as is (the runtime's preemption then signals the thread every
// 10 ms, and nothing else runs on that P); it is the measure of the
// floor. With -syscalls they go through syscall.Syscall, which tells
// the scheduler, as any Go program must for a call that blocks.
//
//	go build -o /tmp/goepoll ./bench/goepoll
//	go run ./bench/cmd/stepup-bench -only=requests -rounds 3 \
//	    -extra 'goepoll=/tmp/goepoll {sock}' -extra 'goepoll-syscalls=/tmp/goepoll -syscalls {sock}'
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	syscalls := flag.Bool("syscalls", false, "make the system calls with syscall.Syscall (telling the scheduler), not raw")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: goepoll [-syscalls] SOCKET")
		os.Exit(2)
	}
	sys := syscall.RawSyscall6
	if *syscalls {
		sys = syscall.Syscall6
	}
	runtime.LockOSThread()
	path := flag.Arg(0)
	os.Remove(path)
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(ln, &unix.SockaddrUnix{Name: path})
	}
	if err == nil {
		err = unix.Listen(ln, 512)
	}
	ep, err2 := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err == nil {
		err = err2
	}
	if err == nil {
		err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ln, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln)})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goepoll:", err)
		os.Exit(1)
	}
	buf := make([]byte, 65536)
	evs := make([]unix.EpollEvent, 256)
	for {
		r, _, e := sys(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), ^uintptr(0), 0, 0)
		if e != 0 {
			continue // EINTR: the runtime's preemption signal
		}
		for _, ev := range evs[:r] {
			fd := int(ev.Fd)
			if fd == ln {
				for {
					c, _, err := unix.Accept4(ln, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if err != nil {
						break
					}
					if unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c)}) != nil {
						unix.Close(c)
					}
				}
				continue
			}
			n, _, e := sys(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				continue
			}
			if e != 0 || n == 0 {
				unix.Close(fd) // also leaves the epoll set
				continue
			}
			// Answers are small and the peer reads them, as in echo.c.
			for off := uintptr(0); off < n; {
				w, _, e := sys(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&buf[off])), n-off, 0, 0, 0)
				if e != 0 {
					break
				}
				off += w
			}
		}
	}
}
