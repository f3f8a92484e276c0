// Package ipc is the agent's transport: JSON-RPC 2.0 over a Unix stream
// socket, one JSON object per line (docs/protocol.md, "Framing"). It reads
// peer credentials, frames and dispatches requests, and writes answers; it
// knows nothing of tokens or prompts, which are the Handler's.
package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/remote"
	"go.uber.org/zap"
)

// MaxLine is the longest request line accepted, without its newline
// (docs/protocol.md, "Framing").
const MaxLine = 64 << 10

// Handler serves requests. Handle returns a result to marshal, or an error:
// an *api.Error goes on the wire as is; any other error becomes -32603
// without its text (which may hold details not meant for clients).
type Handler interface {
	Handle(ctx context.Context, method string, params json.RawMessage) (any, error)
	// Blocking reports whether method may block (prompts, network). Others
	// are served inline on the connection's reader, in order, which saves
	// a goroutine and a wake-up per request; blocking ones run
	// concurrently and may answer out of order. An inline method's
	// params alias the connection's read buffer: they are valid until
	// Handle returns (decoding them copies what it keeps).
	Blocking(method string) bool
}

// Immediate is an optional interface of a Handler. Immediate(method)
// reports that the method answers at once from memory, waiting on
// nothing (not on a person, a program, the network or a keychain write).
// A connection's first request, when it came with the connection and its
// method is immediate, is then answered by the goroutine that accepted
// the connection, before it starts the connection's own: the answer does
// not wait for that hand-off. Everything else is as for any inline
// method (Handler.Blocking).
type Immediate interface {
	Immediate(method string) bool
}

// Server serves a Handler on listeners.
type Server struct {
	Handler Handler
	Log     *zap.Logger
	// UID is the only peer uid accepted; -1 means os.Getuid().
	UID int

	// Limits (docs/protocol.md, "Limits"); zero means the default.
	//
	// WriteTimeout is how long an answer waits for a client that reads
	// nothing; the client then gets one error line and the connection
	// ends. LineTimeout is how long a request line may take to arrive
	// once its first byte has. MaxConns and MaxConnsPerPeer cap the open
	// connections, in all and per peer process; a connection past a cap
	// gets one error line and is closed. MaxInflight caps the requests
	// of one connection that run concurrently (the blocking methods);
	// past it the server stops reading that connection until one ends.
	WriteTimeout    time.Duration
	LineTimeout     time.Duration
	MaxConns        int
	MaxConnsPerPeer int
	MaxInflight     int

	// Idle, when set, is called each time the last open connection
	// closes (from that connection's goroutine, after it is gone): the
	// daemon returns the memory a burst of clients left behind.
	Idle func()

	mu       sync.Mutex
	conns    map[*conn]struct{}
	perPeer  map[int]int
	reserve  *os.File // a descriptor given up to refuse a client at EMFILE
	lns      map[net.Listener]struct{}
	closing  bool
	base     context.Context
	cancel   context.CancelFunc
	connWG   sync.WaitGroup
	initOnce sync.Once

	// refusing holds one slot per refusal being written and drained
	// (refuse), so that refused clients cannot hold descriptors past
	// the caps (maxRefusing); refusedLog rate-limits the log line.
	refusing   chan struct{}
	refused    int       // refusals since the last log line; s.mu
	refusedLog time.Time // when the last one was logged; s.mu
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.conns = map[*conn]struct{}{}
		s.perPeer = map[int]int{}
		s.lns = map[net.Listener]struct{}{}
		s.reserve, _ = os.Open(os.DevNull)
		s.refusing = make(chan struct{}, maxRefusing)
		if s.WriteTimeout <= 0 {
			s.WriteTimeout = DefaultWriteTimeout
		}
		if s.LineTimeout <= 0 {
			s.LineTimeout = DefaultLineTimeout
		}
		if s.MaxConns <= 0 {
			s.MaxConns = DefaultMaxConns
		}
		if s.MaxConnsPerPeer <= 0 {
			s.MaxConnsPerPeer = DefaultMaxConnsPerPeer
		}
		if s.MaxInflight <= 0 {
			s.MaxInflight = DefaultMaxInflight
		}
		s.base, s.cancel = context.WithCancel(context.Background())
		if s.Log == nil {
			s.Log = zap.NewNop()
		}
	})
}

// The default limits (docs/protocol.md, "Limits").
const (
	DefaultWriteTimeout    = 10 * time.Second
	DefaultLineTimeout     = 10 * time.Second
	DefaultMaxConns        = 4096
	DefaultMaxConnsPerPeer = 1024
	DefaultMaxInflight     = 16
)

// maxRefusing bounds the refusals written concurrently, each holding the
// refused connection's descriptor for up to a second while it drains what
// the client sent. Past it a refusal is written at once and the
// connection closed without draining, so that the agent's descriptors
// stay within MaxConns + maxRefusing (and its own) however fast clients
// connect past the cap.
const maxRefusing = 64

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("ipc: server closed")

// Serve accepts connections on ln until Shutdown is called.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeRemote is Serve for the remote socket (docs/remote.md): each
// connection's peer is the local ssh process that forwards it; its
// requests carry that SSH connection (remote.FromContext) and a peer
// whose Remote names it.
func (s *Server) ServeRemote(ln net.Listener) error { return s.serve(ln, true) }

func (s *Server) serve(ln net.Listener, isRemote bool) error {
	s.init()
	uid := s.UID
	if uid < 0 {
		uid = os.Getuid()
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			if isFDExhausted(err) && s.refuseOneAtEMFILE(ln) {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isFDExhausted(err) {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				s.Log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if msg := s.full(); msg != nil {
			// Past the global cap, whoever the client is: refused
			// before the cost of reading who it is.
			s.refuse(c, msg)
			continue
		}
		peer, err := ReadPeer(c)
		if err != nil {
			if isFDExhausted(err) {
				// Reading who the client is needs descriptors too: say
				// why instead of closing without a word.
				s.Log.Warn("refusing connection: out of file descriptors while reading who the client is", zap.Error(err))
				writeFDExhausted(c)
				continue
			}
			s.Log.Warn("refusing connection: cannot read peer credentials", zap.Error(err))
			c.Close()
			continue
		}
		if peer.UID != uid {
			s.Log.Warn("refusing connection from another user", zap.Int("peerUid", peer.UID), zap.Int("peerPid", peer.PID), zap.Int("uid", uid))
			msg := errorLine(nil, api.Errorf(api.CodeForbidden, "connection refused: this agent serves uid %d only, and the client runs as uid %d", uid, peer.UID).
				WithHint("run the client as the user who started the agent, or start an agent of your own"))
			s.refuse(c, msg)
			continue
		}
		var rc *remote.Conn
		if isRemote {
			conn, err := remote.Identify(peer.PID)
			if err != nil {
				s.Log.Warn("refusing remote connection: cannot read the forwarding process", zap.Int("peerPid", peer.PID), zap.Error(err))
				c.Close()
				continue
			}
			rc = &conn
			peer.Remote = conn.Key(peer.Start)
		}
		if msg := s.admit(peer); msg != nil {
			s.refuse(c, msg)
			continue
		}
		s.startConn(c, peer, rc)
	}
}

// full returns the error line refusing a new connection when the agent
// holds MaxConns already (nil otherwise).
func (s *Server) full() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) < s.MaxConns {
		return nil
	}
	return s.refusal(0, s.tooMany())
}

func (s *Server) tooMany() *api.Error {
	return api.Errorf(api.CodeRateLimited, "too many connections: the agent has %d open, its limit; this connection is closed", s.MaxConns).
		WithHint("retry in a moment; a connection carries any number of requests, so reuse one instead of opening many")
}

// refusal counts and logs a refusal over a cap (one log line a second at
// most, with the count since the last) and returns its error line.
// Callers hold s.mu.
func (s *Server) refusal(pid int, e *api.Error) []byte {
	e.Data.RetryAfterSeconds = 1
	s.refused++
	if now := time.Now(); now.Sub(s.refusedLog) >= time.Second {
		s.Log.Warn("refusing connections over the cap", zap.Int("refused", s.refused), zap.Int("open", len(s.conns)),
			zap.Int("peerPid", pid), zap.String("why", e.Message))
		s.refused, s.refusedLog = 0, now
	}
	return errorLine(nil, e)
}

// admit counts a connection of peer against the caps, or returns the
// error line refusing it.
func (s *Server) admit(peer *Peer) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var e *api.Error
	switch {
	case len(s.conns) >= s.MaxConns:
		e = s.tooMany()
	case s.perPeer[peer.PID] >= s.MaxConnsPerPeer:
		e = api.Errorf(api.CodeRateLimited, "too many connections from this process (pid %d): %d open, the limit per process; this connection is closed", peer.PID, s.MaxConnsPerPeer).
			WithHint("close connections you no longer use, or reuse one: a connection carries any number of requests")
	default:
		s.perPeer[peer.PID]++
		return nil
	}
	return s.refusal(peer.PID, e)
}

// refuseOneAtEMFILE answers one waiting client when the process has run
// out of descriptors: it gives up the reserve descriptor, accepts, writes
// the error line, closes, and takes the reserve back. Without it the
// clients would wait in the listen queue with no answer. It reports
// whether it could.
func (s *Server) refuseOneAtEMFILE(ln net.Listener) bool {
	s.mu.Lock()
	r := s.reserve
	s.reserve = nil
	s.mu.Unlock()
	if r == nil {
		return false
	}
	r.Close()
	c, err := ln.Accept()
	if err == nil {
		writeFDExhausted(c)
	}
	nr, rerr := os.Open(os.DevNull)
	s.mu.Lock()
	if rerr == nil {
		s.reserve = nr
	}
	s.mu.Unlock()
	if err != nil {
		s.Log.Warn("out of file descriptors; refusing clients until some close", zap.Error(err))
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// writeFDExhausted tells a client the agent has no descriptors left, and
// closes its connection.
func writeFDExhausted(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write(fdExhaustedLine())
	c.Close()
}

// fdExhaustedLine is the error line of a client refused for want of
// descriptors.
func fdExhaustedLine() []byte {
	e := api.Errorf(api.CodeRateLimited, "the agent has run out of file descriptors; this connection is closed").
		WithHint("retry in a moment; if it persists, raise the agent's descriptor limit (ulimit -n) or close idle connections")
	e.Data.RetryAfterSeconds = 1
	return errorLine(nil, e)
}

// refuse answers a connection the server will not serve with its error
// line: in a goroutine that drains it (drainRefused) while fewer than
// maxRefusing do; past that at once, closing it without draining.
func (s *Server) refuse(c net.Conn, msg []byte) {
	select {
	case s.refusing <- struct{}{}:
		go func() {
			defer func() { <-s.refusing }()
			drainRefused(c, msg)
		}()
	default:
		c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		c.Write(msg) // a new connection's socket buffer takes one line
		c.Close()
	}
}

// drainRefused writes a refused connection's error line, then drains what
// the client sends for a moment before closing, so that a client still
// writing its request reads the refusal instead of EPIPE.
func drainRefused(c net.Conn, msg []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write(msg)
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

func (s *Server) startConn(nc net.Conn, peer *Peer, rc *remote.Conn) {
	ctx := WithPeer(s.base, peer)
	if rc != nil {
		ctx = remote.NewContext(ctx, rc)
	}
	// The context is made cancellable (by the client's hang-up) on the
	// first blocking request only: inline requests never wait on it.
	c := &conn{srv: s, nc: nc, peer: peer, ctx: ctx,
		stopCh: make(chan struct{})}
	r, w := newRawIO(nc, c.armRead, s.WriteTimeout)
	c.rawR = r
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(r)
	c.tail = &tailWriter{w: w}
	c.w = writers.Get().(*bufio.Writer)
	c.w.Reset(c.tail)
	s.mu.Lock()
	if s.closing {
		s.release(peer)
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	// A remote request is audited (a file written and synced): never
	// in the accepting goroutine.
	if im, ok := s.Handler.(Immediate); ok && rc == nil {
		c.serveFirst(im)
	}
	go c.serve()
}

// serveFirst answers, in the accepting goroutine, the connection's first
// request when it is already there (one read that does not wait), whole,
// and its method is immediate. Anything else it leaves in the buffer for
// serve, which goes on from there.
func (c *conn) serveFirst(im Immediate) {
	if !setNoWait(c.rawR, true) {
		return
	}
	defer setNoWait(c.rawR, false)
	if _, err := c.br.Peek(1); err != nil {
		return // nothing yet, or an error serve meets again
	}
	buf, _ := c.br.Peek(c.br.Buffered())
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		return
	}
	req, ok := scanEnvelope(bytes.TrimSpace(buf[:i]))
	if !ok || !req.hasMethod {
		return
	}
	if m := methodName(req.Method); !im.Immediate(m) || c.srv.Handler.Blocking(m) {
		return
	}
	line, err := c.br.ReadSlice('\n') // the line is buffered: no read
	if err != nil {
		return
	}
	c.handleLine(line)
	c.flush()
}

// Shutdown stops accepting, stops reading new requests, lets in-flight
// requests finish until ctx is done, then cancels the rest (dismissing
// their prompts) and waits for them.
func (s *Server) Shutdown(ctx context.Context) {
	s.init()
	s.mu.Lock()
	s.closing = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		<-done
	}
	s.cancel()
}

type conn struct {
	srv  *Server
	nc   net.Conn
	peer *Peer
	// ctx is the requests' context; cancel, set with the first blocking
	// request (by serve's goroutine, before it starts that request), ends
	// it when the client hangs up.
	ctx    context.Context
	cancel context.CancelFunc
	rawR   io.Reader // the reader under br

	// Read by serve's goroutine only (armRead runs inside its reads).
	br           *bufio.Reader
	long         []byte    // a line longer than br's buffer, gathered
	partialSince time.Time // when the server first waited amid a line
	curDeadline  time.Time // the read deadline set by armRead

	dmu         sync.Mutex // guards readStopped and the read deadline
	readStopped bool       // Shutdown or a stall ended reading
	stopOnce    sync.Once
	stopCh      chan struct{} // closed by Shutdown

	sem      chan struct{} // one per blocking request in flight
	inflight sync.WaitGroup

	stalled atomic.Bool // the client stopped reading: answers are dropped
	wmu     sync.Mutex
	werr    error // the first write error; later answers are dropped
	w       *bufio.Writer
	tail    *tailWriter
}

// tailWriter remembers whether the last byte it wrote ended a line, so
// that a closing error line never runs on from a half-written answer.
type tailWriter struct {
	w       io.Writer
	midLine bool
}

func (t *tailWriter) Write(b []byte) (int, error) {
	n, err := t.w.Write(b)
	if n > 0 {
		t.midLine = b[n-1] != '\n'
	}
	return n, err
}

// stop ends reading for Shutdown.
func (c *conn) stop() {
	c.stopReading(time.Now())
	c.stopOnce.Do(func() { close(c.stopCh) })
}

// stopReading makes the reads of the connection end at t, for good.
func (c *conn) stopReading(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readStopped = true
	c.nc.SetReadDeadline(t)
}

// armRead runs before a read waits for the client: amid a line, the rest
// must come within LineTimeout of the first wait for it (a client
// dribbling a line byte by byte is closed); between lines, the wait is
// unbounded.
func (c *conn) armRead() {
	// Between lines with no deadline set, the common case, there is
	// nothing to arm. curDeadline and partialSince belong to serve's
	// goroutine (this runs on it), so they are read without the lock.
	if c.br.Buffered() == 0 && len(c.long) == 0 && c.curDeadline.IsZero() {
		return
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.readStopped {
		return
	}
	var d time.Time
	if c.br.Buffered() > 0 || len(c.long) > 0 {
		if c.partialSince.IsZero() {
			c.partialSince = time.Now()
		}
		d = c.partialSince.Add(c.srv.LineTimeout)
	}
	if !d.Equal(c.curDeadline) {
		c.nc.SetReadDeadline(d)
		c.curDeadline = d
	}
}

// lineDone clears the line deadline once a line is complete.
func (c *conn) lineDone() {
	c.partialSince = time.Time{}
	if c.curDeadline.IsZero() {
		return
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.readStopped {
		c.nc.SetReadDeadline(time.Time{})
		c.curDeadline = time.Time{}
	}
}

// lineTimedOut reports whether a read that failed with a deadline hit
// the line deadline (rather than Shutdown's or a stall's).
func (c *conn) lineTimedOut(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return !c.readStopped
}

// request is a JSON-RPC 2.0 request object.
type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
}

func (c *conn) serve() {
	defer c.srv.connWG.Done()
	defer func() {
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		idle := len(c.srv.conns) == 0
		c.srv.mu.Unlock()
		if idle && c.srv.Idle != nil {
			c.srv.Idle()
		}
	}()
	defer func() {
		c.srv.mu.Lock()
		c.srv.release(c.peer)
		c.srv.mu.Unlock()
	}()
	r := c.br
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it, up to the limit.
			if len(c.long)+len(line) > MaxLine+1 {
				c.tooLong()
				break
			}
			c.long = append(c.long, line...)
			continue
		}
		if c.long != nil {
			c.long = append(c.long, line...)
			line = c.long
		}
		if err != nil && (err != io.EOF || len(line) == 0) {
			if c.lineTimedOut(err) {
				c.lineTimeout()
			}
			break
		}
		if n := len(bytes.TrimSuffix(line, []byte("\n"))); n > MaxLine {
			c.tooLong()
			break
		}
		c.lineDone()
		if !c.stalled.Load() { // a stalled client's requests are read and dropped
			c.handleLine(line)
		}
		c.long = nil
		if err != nil { // a last line without newline, then EOF
			break
		}
		if r.Buffered() == 0 {
			c.flush()
		}
	}
	c.flush()
	// The client hung up (or the server is stopping): requests still
	// running see their context cancelled, unless this is a graceful
	// shutdown, which cancels them itself after its grace period.
	c.srv.mu.Lock()
	closing := c.srv.closing
	c.srv.mu.Unlock()
	if !closing {
		// The client's input has ended. If it has hung up entirely,
		// its requests are cancelled (dismissing their prompts); if
		// it only shut down its writing side, their answers are still
		// wanted.
		// With no blocking request in flight (the sem holds one slot
		// per request until it has answered) there is nothing to wait
		// for.
		if c.sem != nil && len(c.sem) > 0 {
			idle := make(chan struct{})
			go func() { c.inflight.Wait(); close(idle) }()
			waitHangUp(c.nc, idle)
		}
		c.cancelRequests()
	}
	c.inflight.Wait()
	c.cancelRequests()
	c.flush()
	c.nc.Close()
	c.recycle()
}

// cancelRequests cancels the context of the connection's blocking
// requests (dismissing their prompts); serve's goroutine calls it.
func (c *conn) cancelRequests() {
	if c.cancel != nil {
		c.cancel()
	}
}

// A connection's buffers come from pools: a new connection allocates
// neither, and an idle agent holds none.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

// recycle gives the connection's buffers back once nothing can use them:
// serve has stopped reading and no request is in flight; a late write
// finds werr set and is dropped.
func (c *conn) recycle() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
	c.w.Reset(nil)
	writers.Put(c.w)
	c.br.Reset(nil)
	readers.Put(c.br)
}

// release uncounts a connection of peer; s.mu is held.
func (s *Server) release(peer *Peer) {
	if s.perPeer[peer.PID]--; s.perPeer[peer.PID] <= 0 {
		delete(s.perPeer, peer.PID)
	}
}

func (c *conn) lineTimeout() {
	c.write(errorLine(nil, api.Errorf(api.CodeInvalidRequest, "no complete request line within %s; the connection is closed", c.srv.LineTimeout).
		WithHint("send each request as one line ending in \\n, written at once")))
	c.flush()
}

func (c *conn) tooLong() {
	c.write(errorLine(nil, api.Errorf(api.CodeInvalidRequest, "request line longer than %d bytes; the connection is closed", MaxLine).
		WithHint("send one JSON-RPC object per line, at most 64 KiB")))
	c.flush()
}

func (c *conn) handleLine(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	req, ok := scanEnvelope(line)
	if !ok {
		var err error
		if req, err = decodeEnvelope(line); err != nil {
			c.badRequest(line)
			return
		}
	}
	id := json.RawMessage(req.ID)
	if len(id) > 0 && !validID(id) {
		c.write(errorLine(nil, api.Errorf(api.CodeInvalidRequest, "id must be a string, a number or null")))
		return
	}
	if string(req.JSONRPC) != "2.0" || !req.hasMethod {
		c.write(errorLine(id, api.Errorf(api.CodeInvalidRequest, `a request needs "jsonrpc":"2.0" and a "method"`)))
		return
	}
	method := methodName(req.Method)
	params := json.RawMessage(req.Params)
	notify := len(id) == 0
	if c.srv.Handler.Blocking(method) {
		if c.cancel == nil {
			c.ctx, c.cancel = context.WithCancel(c.ctx)
		}
		if !c.acquire() {
			return
		}
		c.inflight.Add(1)
		idCopy := append(json.RawMessage(nil), id...)
		paramsCopy := append(json.RawMessage(nil), params...)
		ctx := c.ctx
		go func() {
			defer func() { <-c.sem; c.inflight.Done() }()
			res, err := c.srv.Handler.Handle(ctx, method, paramsCopy)
			if !notify {
				c.respond(idCopy, method, res, err)
				c.flush()
			}
		}()
		return
	}
	res, err := c.srv.Handler.Handle(c.ctx, method, params)
	if !notify {
		c.respond(id, method, res, err)
	}
}

// badRequest answers a line that is no JSON-RPC request.
func (c *conn) badRequest(line []byte) {
	if !json.Valid(line) {
		c.write(errorLine(nil, api.Errorf(api.CodeParseError, "the request is not valid JSON").
			WithHint("send one JSON-RPC 2.0 object per line, ending in \\n")))
		return
	}
	msg := "the request is not a JSON-RPC 2.0 request object"
	if line[0] == '[' {
		msg = "batch requests are not supported; send one request per line (they may be pipelined)"
	}
	c.write(errorLine(nil, api.Errorf(api.CodeInvalidRequest, "%s", msg).
		WithHint(`send {"jsonrpc":"2.0","id":1,"method":"status","params":{}}`)))
}

// acquire takes a slot for a blocking request, waiting (and so not
// reading the connection) while MaxInflight of them run. It gives up when
// the client hangs up or the server stops.
func (c *conn) acquire() bool {
	if c.sem == nil { // made on the first blocking request only
		c.sem = make(chan struct{}, c.srv.MaxInflight)
	}
	select {
	case c.sem <- struct{}{}:
		return true
	default:
	}
	c.flush() // answers already made go out while this waits
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case c.sem <- struct{}{}:
			return true
		case <-c.stopCh:
			return false
		case <-t.C:
			if hungUp(c.nc) {
				c.cancelRequests()
				return false
			}
		}
	}
}

func validID(id json.RawMessage) bool {
	switch id[0] {
	case '"', 'n':
		return true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}

// Conns returns the number of open connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// respond writes the answer to a request (nothing for a notification).
func (c *conn) respond(id json.RawMessage, method string, res any, err error) {
	if err != nil {
		c.write(c.errorAnswer(id, method, err))
		return
	}
	a := getAnswerBuf()
	defer putAnswerBuf(a)
	merr := a.appendResult(id, res)
	if r, ok := res.(Releaser); ok {
		r.Release()
	}
	if merr != nil {
		c.srv.Log.Error("cannot marshal result", zap.String("method", method), zap.Error(merr))
		c.write(errorLine(id, api.Errorf(api.CodeInternal, "internal error in %s; see the agent's log", method)))
		return
	}
	c.write(a.b.Bytes())
}

func (c *conn) errorAnswer(id json.RawMessage, method string, err error) []byte {
	var ae *api.Error
	if !errors.As(err, &ae) {
		c.srv.Log.Error("internal error", zap.String("method", method), zap.Error(err))
		ae = api.Errorf(api.CodeInternal, "internal error in %s; see the agent's log", method)
	}
	return errorLine(id, ae)
}

func errorLine(id json.RawMessage, e *api.Error) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	body, _ := json.Marshal(e)
	out := make([]byte, 0, len(body)+len(id)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"error":`...)
	out = append(out, body...)
	out = append(out, "}\n"...)
	return out
}

func (c *conn) write(b []byte) {
	if c.stalled.Load() {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil {
		if _, err := c.w.Write(b); err != nil {
			c.writeFailed(err)
		}
	}
}

func (c *conn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil {
		if err := c.w.Flush(); err != nil {
			c.writeFailed(err)
		}
	}
}

// writeFailed handles the first write error; c.wmu is held. From then on
// answers are dropped and requests read but not served (an answer nobody
// gets must not consume a token). A client that stopped reading (the
// write timed out) gets one error line once it reads again; any other
// error means it is gone.
func (c *conn) writeFailed(err error) {
	c.werr = err
	c.stalled.Store(true)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.srv.Log.Warn("client does not read its answers; closing the connection", zap.Int("peerPid", c.peer.PID), zap.Duration("after", c.srv.WriteTimeout))
		go c.closeStalled()
		return
	}
	c.stopReading(time.Now())
}

// stallGrace is how long a stalled client has to read its error line.
const stallGrace = 10 * time.Second

// closeStalled writes the error line that ends a stalled connection, then
// stops reading it. Meanwhile serve reads and drops the client's
// requests, so that a client blocked writing them gets to read.
func (c *conn) closeStalled() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	msg := errorLine(nil, api.Errorf(api.CodeInvalidRequest, "answers were not read for %s; the agent dropped the answers it still held and closes the connection", c.srv.WriteTimeout).
		WithHint("read answers while sending requests (pipelining is fine), or send fewer requests before reading"))
	if c.tail.midLine {
		msg = append([]byte("\n"), msg...)
	}
	// The client gets stallGrace, renewed while it reads, to read what is
	// queued and this line.
	(&progressWriter{nc: c.nc, timeout: stallGrace}).Write(msg)
	if uc, ok := c.nc.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	c.stopReading(time.Now().Add(time.Second))
}
