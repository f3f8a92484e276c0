//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// A proto is how the client asks one server for its cheapest useful
// answer: the request bytes, the greeting to read first (gpg-agent's
// Assuan "OK Pleased to meet you"), and when an answer is complete.
type proto struct {
	req      []byte
	greeting bool                 // read one line before the first request
	complete func(b []byte) bool  // b holds a whole answer
	check    func(b []byte) error // the answer is the expected one
	label    string               // what the request is, for the report
}

// agentRequest is the request line sent to stepup-agent, and (as a line of
// the same size) to the echo server.
var agentRequest = []byte(`{"jsonrpc":"2.0","id":1,"method":"isStepUpRequired","params":{"scope":"wallet:export"}}` + "\n")

func lineComplete(b []byte) bool { return len(b) > 0 && b[len(b)-1] == '\n' }

var (
	// stepup-agent: JSON-RPC isStepUpRequired for wallet:export.
	protoAgent = proto{
		req:      agentRequest,
		complete: lineComplete,
		check: func(b []byte) error {
			if !bytes.Contains(b, []byte(`"result":{"required":`)) {
				return fmt.Errorf("unexpected answer %q", b)
			}
			return nil
		},
		label: "`isStepUpRequired` for `wallet:export` (JSON-RPC line, 86 bytes)",
	}
	// The echo floor: the same line, back.
	protoEcho = proto{
		req:      agentRequest,
		complete: lineComplete,
		check: func(b []byte) error {
			if !bytes.Equal(b, agentRequest) {
				return fmt.Errorf("unexpected answer %q", b)
			}
			return nil
		},
		label: "the same 86-byte line, echoed",
	}
	// The Go floor (bench/goecho): the same line, back.
	protoGoEcho = proto{
		req:      agentRequest,
		complete: lineComplete,
		check:    protoEcho.check,
		label:    "the same 86-byte line, echoed by a plain net/bufio Go server (bench/goecho)",
	}
	// An extra server (-extra): stepup-agent's request, any line back.
	protoExtra = proto{
		req:      agentRequest,
		complete: lineComplete,
		check:    func(b []byte) error { return nil },
		label:    "as stepup-agent (-extra)",
	}
	// ssh-agent: SSH_AGENTC_REQUEST_IDENTITIES (11) answered by
	// SSH_AGENT_IDENTITIES_ANSWER (12) (draft-miller-ssh-agent, 4.4).
	protoSSH = proto{
		req: []byte{0, 0, 0, 1, 11},
		complete: func(b []byte) bool {
			return len(b) >= 4 && len(b) >= 4+int(binary.BigEndian.Uint32(b))
		},
		check: func(b []byte) error {
			if len(b) < 5 || b[4] != 12 {
				return fmt.Errorf("unexpected answer %x", b)
			}
			return nil
		},
		label: "`SSH_AGENTC_REQUEST_IDENTITIES` (one ed25519 key loaded)",
	}
	// gpg-agent: the Assuan NOP command, answered "OK".
	protoGPG = proto{
		req:      []byte("NOP\n"),
		greeting: true,
		complete: lineComplete,
		check: func(b []byte) error {
			if !bytes.Equal(b, []byte("OK\n")) {
				return fmt.Errorf("unexpected answer %q", b)
			}
			return nil
		},
		label: "Assuan `NOP`",
	}
)

// rawConn is a blocking Unix socket driven by plain system calls, so that
// a client thread pinned to a CPU sleeps in read(2) itself, as a C client
// would, with no Go scheduler or netpoller hand-off in the measured path.
type rawConn struct{ fd int }

func dialRaw(path string) (*rawConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &rawConn{fd: fd}, nil
}

func (c *rawConn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *rawConn) Write(b []byte) (int, error) {
	off := 0
	for off < len(b) {
		n, err := unix.Write(c.fd, b[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return off, err
		}
		off += n
	}
	return off, nil
}

func (c *rawConn) Close() error { return unix.Close(c.fd) }

// roundTrip sends p's request and reads one whole answer into buf.
func (p *proto) roundTrip(c io.ReadWriter, buf []byte) ([]byte, error) {
	if _, err := c.Write(p.req); err != nil {
		return nil, err
	}
	return readAnswer(c, buf, p.complete)
}

func readAnswer(c io.Reader, buf []byte, complete func([]byte) bool) ([]byte, error) {
	n := 0
	for {
		if n == len(buf) {
			return nil, errors.New("answer larger than the buffer")
		}
		m, err := c.Read(buf[n:])
		if err != nil {
			return nil, err
		}
		n += m
		if complete(buf[:n]) {
			return buf[:n], nil
		}
	}
}

// greet reads the server's greeting, if its protocol has one.
func (p *proto) greet(c io.Reader, buf []byte) error {
	if !p.greeting {
		return nil
	}
	_, err := readAnswer(c, buf, lineComplete)
	return err
}

// probe checks that a server at path answers p as expected.
func (p *proto) probe(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	if err := p.greet(c, buf); err != nil {
		return err
	}
	b, err := p.roundTrip(c, buf)
	if err != nil {
		return err
	}
	return p.check(b)
}
