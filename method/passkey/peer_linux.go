package passkey

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// peerUID returns the user owning the other end of a loopback TCP
// connection: the socket whose local address is the connection's remote
// one and whose remote address is its local one, as the kernel lists it
// in /proc/net/tcp (tcp6 for ::1) with its owner. The lookup runs while
// the connection is open, so the client's socket is there to be found.
func peerUID(local, remote net.Addr) (int, error) {
	l, ok1 := local.(*net.TCPAddr)
	r, ok2 := remote.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return -1, errors.New("not a TCP connection")
	}
	file := "/proc/net/tcp"
	if l.IP.To4() == nil {
		file = "/proc/net/tcp6"
	}
	f, err := os.Open(file)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 {
			continue
		}
		la, err1 := parseProcAddr(fs[1])
		ra, err2 := parseProcAddr(fs[2])
		if err1 != nil || err2 != nil {
			continue
		}
		if la.Port == r.Port && ra.Port == l.Port && la.IP.Equal(r.IP) && ra.IP.Equal(l.IP) {
			uid, err := strconv.Atoi(fs[7])
			if err != nil {
				return -1, fmt.Errorf("%s: bad uid %q", file, fs[7])
			}
			return uid, nil
		}
	}
	if err := sc.Err(); err != nil {
		return -1, err
	}
	return -1, fmt.Errorf("the client's socket %s is not in %s", remote, file)
}

// parseProcAddr decodes /proc/net/tcp's "0100007F:1F90": the address as
// 32-bit words in host (little-endian) order, the port in hex.
func parseProcAddr(s string) (*net.TCPAddr, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, errors.New("no port")
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil, errors.New("bad address")
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, err
	}
	return &net.TCPAddr{IP: net.IP(b), Port: int(port)}, nil
}

// peerCheckAvailable: on Linux every request's peer is checked.
const peerCheckAvailable = true
