package stepup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/peer"
)

// Errors of the protocol, for errors.Is. Every error the agent returns is
// an *api.Error that matches one of these by code.
var (
	ErrCancelled          = api.ErrCancelled
	ErrVerificationFailed = api.ErrVerificationFailed
	ErrRateLimited        = api.ErrRateLimited
	ErrTimeout            = api.ErrTimeout
	ErrForbidden          = api.ErrForbidden
	ErrNotEnrolled        = api.ErrNotEnrolled
	ErrTokenInvalid       = api.ErrTokenInvalid
	ErrUnknownScope       = api.ErrUnknownScope
	ErrNoPrompter         = api.ErrNoPrompter
	ErrLocked             = api.ErrLocked
)

// Error is the agent's error object.
type Error = api.Error

// DialError says the agent could not be reached, and how to start one.
type DialError struct {
	Socket string
	Err    error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("cannot reach stepup-agent at %s: %v", e.Socket, e.Err)
}
func (e *DialError) Unwrap() error { return e.Err }

// Hint says what to do about it.
func (e *DialError) Hint() string {
	var we *WrongUserError
	if errors.As(e.Err, &we) {
		return "another user's program listens on this socket: do not use it; remove its directory (or ask an administrator to), " +
			"or point STEPUP_AUTH_SOCK at your own agent's socket (with XDG_RUNTIME_DIR set, the default is a private directory)"
	}
	return `start an agent with: eval "$(stepup-agent)"  (or: systemctl --user start stepup-agent.socket), and check that STEPUP_AUTH_SOCK names its socket`
}

// Client talks to the agent. The zero value is ready to use; a Client is
// safe for concurrent use, and pipelines concurrent calls on one
// connection. Calls that prompt use a connection of their own, closed
// when their context is done, which dismisses the prompt.
type Client struct {
	// Socket is the agent's socket; empty means $STEPUP_AUTH_SOCK or the
	// default path.
	Socket string
	// Env overrides the prompt environment sent with prompts; nil means
	// the caller's own (tty, TERM, DISPLAY, WAYLAND_DISPLAY, locale).
	Env *api.PromptEnv
	// Serial is for a caller that makes one call at a time, such as a
	// command-line tool: each call on the shared connection reads its
	// own answer on the calling goroutine, with no reader goroutine
	// (which, with its thread and its buffer, was a tenth of a one-call
	// process). Concurrent calls still work; they wait for each other
	// instead of pipelining.
	Serial bool

	mu   sync.Mutex
	conn *clientConn
}

func (c *Client) socket() string {
	if c.Socket != "" {
		return c.Socket
	}
	return api.SocketPath()
}

type clientConn struct {
	nc  net.Conn
	wmu sync.Mutex
	// serial: no reader goroutine; a call holds sem (one slot), writes,
	// and reads its answer from br itself.
	serial bool
	sem    chan struct{}
	br     *bufio.Reader

	mu   sync.Mutex
	next uint64
	wait map[uint64]chan response
	err  error
}

type response struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *api.Error      `json:"error"`
}

func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	return c.dialMode(ctx, false)
}

func (c *Client) dialMode(ctx context.Context, serial bool) (*clientConn, error) {
	path := c.socket()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, &DialError{Socket: path, Err: err}
	}
	if err := checkPeer(nc); err != nil {
		nc.Close()
		return nil, &DialError{Socket: path, Err: err}
	}
	cc := &clientConn{nc: nc, wait: map[uint64]chan response{}, serial: serial}
	if serial {
		cc.sem = make(chan struct{}, 1)
		cc.br = bufio.NewReaderSize(nc, 4<<10)
	} else {
		go cc.read()
	}
	return cc, nil
}

// WrongUserError: the socket is served by a process of another user. The
// default socket without XDG_RUNTIME_DIR, /tmp/stepup-UID/agent.sock, is
// a name any local user can take first; an agent of theirs would be
// handed the codes and passwords this client collects, so the client
// talks only to a process of its own uid.
type WrongUserError struct {
	UID, Want int
}

func (e *WrongUserError) Error() string {
	return fmt.Sprintf("the socket is served by uid %d, not by you (uid %d): refusing to talk to it", e.UID, e.Want)
}

// checkPeer refuses a socket whose server runs as another user.
func checkPeer(nc net.Conn) error {
	if _, ok := nc.(*net.UnixConn); !ok {
		return nil
	}
	cred, known, err := peer.ReadCred(nc)
	if err != nil {
		return fmt.Errorf("cannot read the agent's credentials: %w", err)
	}
	if want := os.Getuid(); known && cred.UID != want {
		return &WrongUserError{UID: cred.UID, Want: want}
	}
	return nil
}

// MaxAnswer bounds an answer line the client reads. The agent's answers
// are far smaller (a status with 10,000 tokens is a few MiB); the bound
// keeps a program that is not the agent, listening on the socket, from
// making the client hold any amount of memory.
const MaxAnswer = 16 << 20

// ErrAnswerTooLong: an answer line longer than MaxAnswer; the connection
// is closed.
var ErrAnswerTooLong = errors.New("an answer on the agent's socket is longer than 16 MiB; the connection is closed (is STEPUP_AUTH_SOCK the agent's socket?)")

// readAnswer reads one answer line, at most MaxAnswer bytes and its \n.
func readAnswer(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		if len(line)+len(part) > MaxAnswer+1 {
			return nil, ErrAnswerTooLong
		}
		if err == nil && line == nil {
			return append([]byte(nil), part...), nil // the common case: one piece
		}
		line = append(line, part...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

func (cc *clientConn) read() {
	r := bufio.NewReaderSize(cc.nc, 4<<10) // ReadBytes goes past it for a longer line
	var err error
	for {
		var line []byte
		line, err = readAnswer(r)
		if err != nil {
			break
		}
		var resp response
		if decodeResponse(line, &resp) != nil {
			continue
		}
		id, perr := strconv.ParseUint(string(resp.ID), 10, 64)
		cc.mu.Lock()
		ch, ok := cc.wait[id]
		if perr == nil && ok {
			delete(cc.wait, id)
		}
		cc.mu.Unlock()
		if perr != nil || !ok {
			// An answer with a null id: the agent refused the
			// connection or the line. Fail every waiting call.
			if resp.Error != nil {
				err = resp.Error
				break
			}
			continue
		}
		ch <- resp
	}
	if err == nil {
		err = errors.New("connection closed")
	}
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
	}
	for id, ch := range cc.wait {
		delete(cc.wait, id)
		close(ch)
	}
	cc.mu.Unlock()
	cc.nc.Close()
}

func (cc *clientConn) call(ctx context.Context, method string, params, result any) error {
	if cc.serial {
		return cc.callSerial(ctx, method, params, result)
	}
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return err
	}
	cc.next++
	id := cc.next
	ch := make(chan response, 1)
	cc.wait[id] = ch
	cc.mu.Unlock()

	if err := cc.send(ctx, id, method, params); err != nil {
		return err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			cc.mu.Lock()
			err := cc.err
			cc.mu.Unlock()
			if ae, isAPI := err.(*api.Error); isAPI {
				return ae
			}
			if errors.Is(err, ErrAnswerTooLong) {
				return err
			}
			return fmt.Errorf("stepup-agent closed the connection: %w", err)
		}
		return resp.into(result)
	case <-ctx.Done():
		cc.mu.Lock()
		delete(cc.wait, id)
		cc.mu.Unlock()
		return ctx.Err()
	}
}

// send writes one request line.
func (cc *clientConn) send(ctx context.Context, id uint64, method string, params any) error {
	line, err := api.AppendRequest(make([]byte, 0, 256), id, method, params)
	if err != nil {
		return err
	}
	cc.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		cc.nc.SetWriteDeadline(dl)
	} else {
		cc.nc.SetWriteDeadline(time.Time{})
	}
	_, err = cc.nc.Write(line)
	cc.wmu.Unlock()
	if err != nil {
		cc.fail(err)
	}
	return err
}

// callSerial is call on a serial connection: write, then read lines
// until the answer with this call's id. A call that ctx ends leaves the
// connection broken (its answer would still come), so the next call
// dials again.
func (cc *clientConn) callSerial(ctx context.Context, method string, params, result any) error {
	// Waiting for the call ahead is bounded by this call's own ctx.
	select {
	case cc.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-cc.sem }()
	cc.mu.Lock()
	err := cc.err
	cc.next++
	id := cc.next
	cc.mu.Unlock()
	if err != nil {
		// The call ahead broke the connection (its ctx ended, or the
		// agent hung up): nothing of this call was sent, so Call
		// dials again for it.
		return errStale
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := cc.send(ctx, id, method, params); err != nil {
		return err
	}
	// Only ctx ends the wait, so that a call cut short always says why
	// (ctx.Err), never a bare i/o timeout.
	cc.nc.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { cc.nc.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			// ctx ended as the answer came: the deadline may land
			// after this call; the next one dials again.
			cc.fail(ctx.Err())
		}
	}()
	for {
		line, err := readAnswer(cc.br)
		if err != nil {
			if ctx.Err() != nil {
				cc.fail(ctx.Err())
				return ctx.Err()
			}
			cc.fail(err)
			if errors.Is(err, ErrAnswerTooLong) {
				return err
			}
			return fmt.Errorf("stepup-agent closed the connection: %w", err)
		}
		var resp response
		if decodeResponse(line, &resp) != nil {
			continue
		}
		got, perr := strconv.ParseUint(string(resp.ID), 10, 64)
		if perr != nil {
			// A null id: the agent refused the connection or the line.
			if resp.Error != nil {
				cc.fail(resp.Error)
				return resp.Error
			}
			continue
		}
		if got != id {
			continue // the answer to a call ctx ended earlier
		}
		return resp.into(result)
	}
}

func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
	}
	cc.mu.Unlock()
	cc.nc.Close()
}

func (cc *clientConn) broken() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil
}

// Call sends one request and decodes its result into result (which may be
// nil). It is the escape hatch for methods this package has no helper for.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	for try := 0; ; try++ {
		c.mu.Lock()
		cc := c.conn
		if cc == nil || cc.broken() {
			var err error
			cc, err = c.dialMode(ctx, c.Serial)
			if err != nil {
				c.mu.Unlock()
				return err
			}
			c.conn = cc
		}
		c.mu.Unlock()
		if err := cc.call(ctx, method, params, result); err != errStale || try == 2 {
			return err
		}
	}
}

// into is a call's outcome from its answer: the agent's error, or the
// result decoded into result (nil: not wanted). An answer without a
// result (absent or null) is an error, not a zero value:
// IsStepUpRequired would read it as "no step-up needed".
func (r *response) into(result any) error {
	if r.Error != nil {
		return r.Error
	}
	if result == nil {
		return nil
	}
	if len(r.Result) == 0 || string(r.Result) == "null" {
		return errors.New("the agent's answer has no result")
	}
	return decodeResult(r.Result, result)
}

// errStale: a serial call found its connection broken by the call ahead
// of it before it sent anything; Call dials again.
var errStale = errors.New("the connection was broken by an earlier call")

// callOwn runs one call on a connection of its own, closed when the call
// ends or ctx is done: the agent then dismisses any prompt it showed.
func (c *Client) callOwn(ctx context.Context, method string, params, result any) error {
	cc, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cc.fail(errors.New("call finished"))
	stop := context.AfterFunc(ctx, func() { cc.fail(ctx.Err()) })
	defer stop()
	err = cc.call(ctx, method, params, result)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Close closes the shared connection. The Client may be used again.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.fail(errors.New("client closed"))
		c.conn = nil
	}
	return nil
}
