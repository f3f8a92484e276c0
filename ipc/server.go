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
	// concurrently and may answer out of order.
	Blocking(method string) bool
}

// Server serves a Handler on listeners.
type Server struct {
	Handler Handler
	Log     *zap.Logger
	// UID is the only peer uid accepted; -1 means os.Getuid().
	UID int

	mu       sync.Mutex
	conns    map[*conn]struct{}
	lns      map[net.Listener]struct{}
	closing  bool
	base     context.Context
	cancel   context.CancelFunc
	connWG   sync.WaitGroup
	initOnce sync.Once
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.conns = map[*conn]struct{}{}
		s.lns = map[net.Listener]struct{}{}
		s.base, s.cancel = context.WithCancel(context.Background())
		if s.Log == nil {
			s.Log = zap.NewNop()
		}
	})
}

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
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				s.Log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		peer, err := ReadPeer(c)
		if err != nil {
			s.Log.Warn("refusing connection: cannot read peer credentials", zap.Error(err))
			c.Close()
			continue
		}
		if peer.UID != uid {
			s.Log.Warn("refusing connection from another user", zap.Int("peerUid", peer.UID), zap.Int("peerPid", peer.PID), zap.Int("uid", uid))
			msg := errorLine(nil, api.Errorf(api.CodeForbidden, "connection refused: this agent serves uid %d only, and the client runs as uid %d", uid, peer.UID).
				WithHint("run the client as the user who started the agent, or start an agent of your own"))
			go refuse(c, msg)
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
		s.startConn(c, peer, rc)
	}
}

// refuse answers a connection it will not serve with one error line, then
// drains what the client sends for a moment before closing, so that a
// client still writing its request reads the refusal instead of EPIPE.
func refuse(c net.Conn, msg []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write(msg)
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

func (s *Server) startConn(nc net.Conn, peer *Peer, rc *remote.Conn) {
	base := WithPeer(s.base, peer)
	if rc != nil {
		base = remote.NewContext(base, rc)
	}
	ctx, cancel := context.WithCancel(base)
	c := &conn{srv: s, nc: nc, peer: peer, ctx: ctx, cancel: cancel}
	var w io.Writer
	c.r, w, c.rawWrites = newRawIO(nc)
	c.w = bufio.NewWriterSize(w, 4096)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		cancel()
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go c.serve()
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
		c.nc.SetReadDeadline(time.Now())
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
	srv    *Server
	nc     net.Conn
	peer   *Peer
	ctx    context.Context
	cancel context.CancelFunc

	r         io.Reader // nc, or rawIO over it
	rawWrites bool      // w writes through rawIO

	wmu sync.Mutex
	w   *bufio.Writer

	inflight sync.WaitGroup
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
		c.srv.mu.Unlock()
	}()
	r := bufio.NewReaderSize(c.r, 4096)
	var long []byte
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it, up to the limit.
			if len(long)+len(line) > MaxLine+1 {
				c.tooLong()
				break
			}
			long = append(long, line...)
			continue
		}
		if long != nil {
			long = append(long, line...)
			line = long
		}
		if err != nil && (err != io.EOF || len(line) == 0) {
			break
		}
		if n := len(bytes.TrimSuffix(line, []byte("\n"))); n > MaxLine {
			c.tooLong()
			break
		}
		c.handleLine(line)
		long = nil
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
		idle := make(chan struct{})
		go func() { c.inflight.Wait(); close(idle) }()
		waitHangUp(c.nc, idle)
		c.cancel()
	}
	c.inflight.Wait()
	c.cancel()
	c.flush()
	c.nc.Close()
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
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
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
		return
	}
	id := req.ID
	if len(id) > 0 && !validID(id) {
		c.write(errorLine(nil, api.Errorf(api.CodeInvalidRequest, "id must be a string, a number or null")))
		return
	}
	if req.JSONRPC != "2.0" || req.Method == nil {
		c.write(errorLine(id, api.Errorf(api.CodeInvalidRequest, `a request needs "jsonrpc":"2.0" and a "method"`)))
		return
	}
	method := *req.Method
	params := req.Params
	notify := len(id) == 0
	if c.srv.Handler.Blocking(method) {
		c.inflight.Add(1)
		idCopy := append(json.RawMessage(nil), id...)
		paramsCopy := append(json.RawMessage(nil), params...)
		go func() {
			defer c.inflight.Done()
			res, err := c.srv.Handler.Handle(c.ctx, method, paramsCopy)
			if !notify {
				c.write(c.answer(idCopy, method, res, err))
				c.flush()
			}
		}()
		return
	}
	res, err := c.srv.Handler.Handle(c.ctx, method, params)
	if !notify {
		c.write(c.answer(id, method, res, err))
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

func (c *conn) answer(id json.RawMessage, method string, res any, err error) []byte {
	if err != nil {
		var ae *api.Error
		if !errors.As(err, &ae) {
			c.srv.Log.Error("internal error", zap.String("method", method), zap.Error(err))
			ae = api.Errorf(api.CodeInternal, "internal error in %s; see the agent's log", method)
		}
		return errorLine(id, ae)
	}
	body, merr := json.Marshal(res)
	if merr != nil {
		c.srv.Log.Error("cannot marshal result", zap.String("method", method), zap.Error(merr))
		return errorLine(id, api.Errorf(api.CodeInternal, "internal error in %s; see the agent's log", method))
	}
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	out := make([]byte, 0, len(body)+len(id)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"result":`...)
	out = append(out, body...)
	out = append(out, "}\n"...)
	return out
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
	c.wmu.Lock()
	c.w.Write(b)
	c.wmu.Unlock()
}

// writeTimeout bounds how long an answer waits for a client that does
// not read.
const writeTimeout = 10 * time.Second

func (c *conn) flush() {
	c.wmu.Lock()
	if !c.rawWrites { // rawIO sets the deadline itself, only when it waits
		c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	c.w.Flush()
	c.wmu.Unlock()
}
