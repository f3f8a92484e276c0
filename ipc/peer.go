package ipc

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Peer is the identity of the process at the other end of a connection,
// read once from the kernel (SO_PEERCRED on Linux, LOCAL_PEERCRED on
// macOS) when the connection is accepted.
type Peer struct {
	PID int
	UID int
	GID int

	exeOnce sync.Once
	exe     string
}

// Exe returns the peer's executable path ("" when it cannot be read). It
// is read on first use, since most requests never need it.
func (p *Peer) Exe() string {
	p.exeOnce.Do(func() {
		if p.PID > 0 {
			p.exe = peerExe(p.PID)
		}
	})
	return p.exe
}

// String describes the peer for logs and prompts. The executable's path is
// whatever its file is named, chosen by whoever put it there, so it is
// shown quoted, with escapes, when it holds anything but printable
// characters (a line feed could start a fake line in a prompt), and cut
// to its last maxExeShown bytes (a 4 KiB path would push the scope out of
// the prompt). Exe still returns the path as it is.
func (p *Peer) String() string {
	if exe := p.Exe(); exe != "" {
		return fmt.Sprintf("%s (pid %d)", displayPath(exe), p.PID)
	}
	return fmt.Sprintf("pid %d", p.PID)
}

// maxExeShown is how much of an executable's path String shows.
const maxExeShown = 160

func displayPath(path string) string {
	cut := false
	if len(path) > maxExeShown {
		i := len(path) - maxExeShown
		for i < len(path) && !utf8.RuneStart(path[i]) {
			i++
		}
		path, cut = path[i:], true
	}
	if q := strconv.Quote(path); q[1:len(q)-1] != path {
		path = q
	}
	if cut {
		path = "…" + path
	}
	return path
}

type peerKey struct{}

// WithPeer returns ctx carrying p.
func WithPeer(ctx context.Context, p *Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the peer of the connection a request came in on, or nil.
func PeerFrom(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// ReadPeer reads the peer credentials of a Unix socket connection.
func ReadPeer(c net.Conn) (*Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var p *Peer
	var perr error
	if err := raw.Control(func(fd uintptr) { p, perr = peerCred(int(fd)) }); err != nil {
		return nil, err
	}
	return p, perr
}

func selfExe() string {
	exe, _ := os.Executable()
	return exe
}
