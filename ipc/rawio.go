package ipc

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// hookReader calls before ahead of every read of nc: the portable way to
// arm the line deadline (rawIO calls it only before it waits).
type hookReader struct {
	nc     net.Conn
	before func()
}

func (h *hookReader) Read(b []byte) (int, error) {
	h.before()
	return h.nc.Read(b)
}

// progressWriter writes all of b to nc, failing only when timeout passes
// with no byte written: a client reading slowly keeps its connection, one
// that reads nothing loses it.
type progressWriter struct {
	nc      net.Conn
	timeout time.Duration
}

func (p *progressWriter) Write(b []byte) (int, error) {
	total := 0
	for total < len(b) {
		p.nc.SetWriteDeadline(time.Now().Add(p.timeout))
		n, err := p.nc.Write(b[total:])
		total += n
		if err != nil && (n == 0 || !isTimeout(err)) {
			return total, err
		}
	}
	return total, nil
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// errWouldBlock is a read's error in no-wait mode when nothing is there.
var errWouldBlock = errors.New("ipc: nothing to read yet")

var _ io.Writer = (*progressWriter)(nil)
