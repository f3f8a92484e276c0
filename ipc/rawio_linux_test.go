package ipc

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// unixPair returns the two ends of a connected Unix stream socket pair.
func unixPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// A request read and its answer written cost no allocation: before, the
// closures handed to RawConn.Read and Write escaped, two allocations a
// request and a garbage collection every few thousand requests under load.
func TestRawIOAllocatesNothing(t *testing.T) {
	a, b := unixPair(t)
	r, w := newRawIO(a, func() {}, 0)
	if _, ok := r.(*rawIO); !ok {
		t.Fatalf("newRawIO on a Unix socket gave %T, not the raw reader", r)
	}
	line := []byte(`{"jsonrpc":"2.0","id":1,"method":"isStepUpRequired","params":{"scope":"wallet:export"}}` + "\n")
	buf := make([]byte, 4096)
	peer := make([]byte, 4096)
	n := testing.AllocsPerRun(500, func() {
		if _, err := b.Write(line); err != nil {
			t.Fatal(err)
		}
		m, err := r.Read(buf)
		if err != nil || m != len(line) {
			t.Fatalf("read %d bytes, %v; want %d", m, err, len(line))
		}
		if _, err := w.Write(buf[:m]); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Read(peer); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("a read and a write through rawIO allocate %.1f times; want 0", n)
	}
}

// A read that finds nothing waits in the netpoller and then reads what
// came; the reader keeps no reference to the caller's buffer after.
func TestRawIOWaitsThenReads(t *testing.T) {
	a, b := unixPair(t)
	waited := make(chan struct{}, 1)
	r, _ := newRawIO(a, func() {
		select {
		case waited <- struct{}{}:
		default:
		}
	}, 0)
	go func() {
		<-waited
		b.Write([]byte("late\n"))
	}()
	buf := make([]byte, 64)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "late\n" {
		t.Fatalf("Read = %q, %v; want \"late\\n\"", buf[:n], err)
	}
	if x := r.(*rawIO); x.rd.b != nil {
		t.Error("the reader still holds the caller's buffer")
	}
}
