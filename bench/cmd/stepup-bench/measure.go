//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat; it is
// 100 on every Linux ABI Go supports.
const clkTck = 100

// cpuTime is a process's user+system CPU time so far, all its threads
// included (the living and the exited), from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'. Then: state(3) ... utime(14) stime(15).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// memStat is a process's resident memory in bytes, from /proc/PID/status:
// VmRSS, and its anonymous (heap, stacks: the process's own) and
// file-backed (the executable and libraries, clean page-cache pages
// shared with other processes) parts.
type memStat struct{ rss, anon, file int64 }

func rssOf(pid int) (memStat, error) {
	var m memStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		f := strings.Fields(v)
		if !ok || len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.rss = kb << 10
		case "RssAnon":
			m.anon = kb << 10
		case "RssFile":
			m.file = kb << 10
		}
	}
	if m.rss == 0 {
		return m, errors.New("no VmRSS")
	}
	return m, nil
}

// pin sets the CPU affinity of every thread of pid (threads it creates
// later inherit it). cpus nil means all CPUs.
func pin(pid int, cpus []int) error {
	var set unix.CPUSet
	if cpus == nil {
		for i := 0; i < runtime.NumCPU(); i++ {
			set.Set(i)
		}
	} else {
		for _, c := range cpus {
			set.Set(c)
		}
	}
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tids {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin %d: %w", tid, err)
		}
	}
	return nil
}

// pinSelf pins the calling goroutine's thread to cpu, locked; undo
// restores all CPUs and unlocks.
func pinSelf(cpu int) (undo func(), err error) {
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return func() {
		var all unix.CPUSet
		for i := 0; i < runtime.NumCPU(); i++ {
			all.Set(i)
		}
		unix.SchedSetaffinity(0, &all)
		runtime.UnlockOSThread()
	}, nil
}

// settle lets a server finish what a client left it (closing connections)
// before its CPU time is read.
func settle() { time.Sleep(30 * time.Millisecond) }

// latencyResult is one round on one persistent connection.
type latencyResult struct {
	p50, p99, mean time.Duration
	cpuPerReq      time.Duration
}

// latency sends n requests one after another on one connection, the client
// thread and the server pinned to cpu, and times each.
func latency(s *server, cpu, warm, n int) (latencyResult, error) {
	var r latencyResult
	if err := pin(s.pid, []int{cpu}); err != nil {
		return r, err
	}
	defer pin(s.pid, nil)
	undo, err := pinSelf(cpu)
	if err != nil {
		return r, err
	}
	defer undo()
	c, err := dialRaw(s.sock)
	if err != nil {
		return r, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	p := s.proto
	if err := p.greet(c, buf); err != nil {
		return r, err
	}
	for i := 0; i < warm; i++ {
		if _, err := p.roundTrip(c, buf); err != nil {
			return r, err
		}
	}
	ds := make([]time.Duration, n)
	cpu0, err := cpuTime(s.pid)
	if err != nil {
		return r, err
	}
	start := time.Now()
	for i := range ds {
		t := time.Now()
		if _, err := p.roundTrip(c, buf); err != nil {
			return r, err
		}
		ds[i] = time.Since(t)
	}
	total := time.Since(start)
	cpu1, err := cpuTime(s.pid)
	if err != nil {
		return r, err
	}
	slices.Sort(ds)
	r.p50 = ds[n/2]
	r.p99 = ds[n*99/100]
	r.mean = total / time.Duration(n)
	r.cpuPerReq = (cpu1 - cpu0) / time.Duration(n)
	return r, nil
}

// connectResult is one round of connect-per-request.
type connectResult struct {
	p50, p99   time.Duration
	cpuPerConn time.Duration
}

// requestOnce connects, reads the greeting where the protocol has one,
// makes one request and closes.
func requestOnce(s *server, buf []byte) error {
	c, err := dialRaw(s.sock)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := s.proto.greet(c, buf); err != nil {
		return err
	}
	_, err = s.proto.roundTrip(c, buf)
	return err
}

// connectPerRequest opens a connection for each of n requests (reading
// the greeting where the protocol has one) and closes it, pinned as in
// latency.
func connectPerRequest(s *server, cpu, n int) (connectResult, error) {
	var r connectResult
	if err := pin(s.pid, []int{cpu}); err != nil {
		return r, err
	}
	defer pin(s.pid, nil)
	undo, err := pinSelf(cpu)
	if err != nil {
		return r, err
	}
	defer undo()
	buf := make([]byte, 64<<10)
	one := func() error { return requestOnce(s, buf) }
	for i := 0; i < n/10; i++ {
		if err := one(); err != nil {
			return r, err
		}
	}
	settle()
	ds := make([]time.Duration, n)
	cpu0, err := cpuTime(s.pid)
	if err != nil {
		return r, err
	}
	for i := range ds {
		t := time.Now()
		if err := one(); err != nil {
			return r, err
		}
		ds[i] = time.Since(t)
	}
	settle()
	cpu1, err := cpuTime(s.pid)
	if err != nil {
		return r, err
	}
	slices.Sort(ds)
	r.p50, r.p99 = ds[n/2], ds[n*99/100]
	r.cpuPerConn = (cpu1 - cpu0) / time.Duration(n)
	return r, nil
}

// throughputResult is one round over many connections.
type throughputResult struct {
	rps       float64
	cpuPerReq time.Duration
	cpuUtil   float64 // server CPU seconds per second
}

// throughput runs conns connections, each sending its next request when
// the answer to the last one has arrived (no pipelining), for d after a
// warm-up, and counts the answers. The client is one thread with epoll and
// non-blocking system calls, as a C load generator would be: a read and a
// write per request plus a share of epoll_wait, so that it costs each
// server the same and as little as it can.
func throughput(s *server, conns int, warm, d time.Duration) (throughputResult, error) {
	var r throughputResult
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := s.proto
	type cstate struct {
		c *rawConn
		n int
	}
	cs := make([]*cstate, conns)
	defer func() {
		for _, c := range cs {
			if c != nil {
				c.c.Close()
			}
		}
	}()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return r, err
	}
	defer unix.Close(ep)
	bufs := make([]byte, conns*4096)
	for i := range cs {
		c, err := dialRaw(s.sock)
		if err != nil {
			return r, err
		}
		cs[i] = &cstate{c: c}
		if err := p.greet(c, bufs[i*4096:(i+1)*4096]); err != nil {
			return r, err
		}
		if err := unix.SetNonblock(c.fd, true); err != nil {
			return r, err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			return r, err
		}
	}
	send := func(c *cstate) error {
		n, err := unix.Write(c.c.fd, p.req)
		if err == nil && n != len(p.req) {
			err = errors.New("short write")
		}
		return err
	}
	for _, c := range cs {
		if err := send(c); err != nil {
			return r, err
		}
	}
	var count int64
	var n0 int64
	var cpu0 time.Duration
	t := time.Now()
	measureAt, endAt := t.Add(warm), t.Add(warm+d)
	var t0 time.Time
	evs := make([]unix.EpollEvent, conns)
	for {
		now := time.Now()
		if t0.IsZero() && !now.Before(measureAt) {
			if cpu0, err = cpuTime(s.pid); err != nil {
				return r, err
			}
			n0, t0 = count, time.Now()
		}
		if !now.Before(endAt) {
			break
		}
		k, err := unix.EpollWait(ep, evs, 100)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return r, err
		}
		for _, ev := range evs[:k] {
			i := int(ev.Fd)
			c := cs[i]
			buf := bufs[i*4096 : (i+1)*4096]
			m, err := unix.Read(c.c.fd, buf[c.n:])
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if err != nil {
				return r, err
			}
			if m == 0 {
				return r, errors.New("the server closed a connection")
			}
			c.n += m
			if !p.complete(buf[:c.n]) {
				if c.n == len(buf) {
					return r, errors.New("answer larger than the buffer")
				}
				continue
			}
			c.n = 0
			count++
			if err := send(c); err != nil {
				return r, err
			}
		}
	}
	el := time.Since(t0)
	cpu1, err := cpuTime(s.pid)
	if err != nil {
		return r, err
	}
	if count == n0 {
		return r, errors.New("no answers")
	}
	r.rps = float64(count-n0) / el.Seconds()
	r.cpuPerReq = (cpu1 - cpu0) / time.Duration(count-n0)
	r.cpuUtil = (cpu1 - cpu0).Seconds() / el.Seconds()
	return r, nil
}

// socketDir makes a short directory for sockets (sun_path is 108 bytes).
func socketDir() (string, error) {
	return os.MkdirTemp("", "stepup-bench-")
}
