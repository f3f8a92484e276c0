package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// Benchmarks of the transport alone: framing, JSON-RPC decoding, dispatch
// and encoding, with a handler that answers isStepUpRequired from memory.
// The whole agent is measured against ssh-agent and gpg-agent by
// bench/cmd/stepup-bench (docs/BENCHMARKS.md).
//
//	go test -run '^$' -bench . -benchmem ./ipc/

type benchHandler struct{}

func (benchHandler) Blocking(string) bool { return false }

func (benchHandler) Handle(_ context.Context, m string, params json.RawMessage) (any, error) {
	if m != api.MethodIsStepUpRequired {
		return nil, api.Errorf(api.CodeMethodNotFound, "unknown method %q", m)
	}
	var p api.ScopeParams
	if err := json.Unmarshal(params, &p); err != nil {
		return nil, api.Errorf(api.CodeInvalidParams, "invalid params")
	}
	return &api.StepUpRequired{Required: true, Scope: p.Scope, Methods: []string{"totp"}, DefaultMethod: "totp"}, nil
}

func benchServer(tb testing.TB, h Handler) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "b.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &Server{Handler: h, UID: -1}
	go srv.Serve(ln)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return path
}

func benchRequest(id int) []byte {
	return []byte(`{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"isStepUpRequired","params":{"scope":"wallet:export"}}` + "\n")
}

// pipelined sends n requests in batches of depth without waiting, then
// reads and checks every answer.
func pipelined(tb testing.TB, path string, n, depth int) {
	c, err := net.Dial("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReaderSize(c, 64<<10)
	var batch []byte
	for sent := 0; sent < n; {
		k := min(depth, n-sent)
		batch = batch[:0]
		for i := 0; i < k; i++ {
			batch = append(batch, benchRequest(sent+i)...)
		}
		if _, err := c.Write(batch); err != nil {
			tb.Fatal(err)
		}
		for i := 0; i < k; i++ {
			line, err := r.ReadSlice('\n')
			if err != nil {
				tb.Fatal(err)
			}
			want := []byte(`"id":` + strconv.Itoa(sent+i) + `,"result":{"required":true`)
			if !bytes.Contains(line, want) {
				tb.Fatalf("answer %d: %s", sent+i, line)
			}
		}
		sent += k
	}
}

// TestBenchmarksRun runs the benchmarks' paths once, so that `go test`
// keeps them working.
func TestBenchmarksRun(t *testing.T) {
	path := benchServer(t, benchHandler{})
	pipelined(t, path, 300, 64)
	pipelined(t, path, 20, 1)
	c := benchConn(io.Discard)
	for i := 0; i < 10; i++ {
		c.handleLine(benchRequest(i))
	}
}

func BenchmarkServeLockstep(b *testing.B) {
	path := benchServer(b, benchHandler{})
	b.ReportAllocs()
	b.ResetTimer()
	pipelined(b, path, b.N, 1)
}

func BenchmarkServePipelined64(b *testing.B) {
	path := benchServer(b, benchHandler{})
	b.ReportAllocs()
	b.ResetTimer()
	pipelined(b, path, b.N, 64)
}

func benchConn(w io.Writer) *conn {
	s := &Server{Handler: benchHandler{}, UID: -1}
	s.init()
	c := &conn{srv: s, ctx: context.Background(), cancel: func() {}}
	c.w = bufio.NewWriterSize(w, 4096)
	return c
}

// BenchmarkHandleLine is one request line decoded, dispatched and its
// answer encoded into the connection's buffer, without I/O.
func BenchmarkHandleLine(b *testing.B) {
	c := benchConn(io.Discard)
	line := benchRequest(12345)
	b.ReportAllocs()
	for b.Loop() {
		c.handleLine(line)
	}
}

// BenchmarkDecodeEnvelope is the JSON-RPC envelope alone, by the
// server's scanner.
func BenchmarkDecodeEnvelope(b *testing.B) {
	line := benchRequest(12345)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := scanEnvelope(line); !ok {
			b.Fatal("declined")
		}
	}
}

// BenchmarkDecodeEnvelopeJSON is the same envelope by encoding/json,
// which the scanner replaces on the hot path.
func BenchmarkDecodeEnvelopeJSON(b *testing.B) {
	line := benchRequest(12345)
	b.ReportAllocs()
	for b.Loop() {
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnswer is one result encoded into a pooled buffer and written
// to the connection's buffer.
func BenchmarkAnswer(b *testing.B) {
	c := benchConn(io.Discard)
	res := &api.StepUpRequired{Required: true, Scope: "wallet:export", Methods: []string{"totp"}, DefaultMethod: "totp"}
	id := json.RawMessage("12345")
	b.ReportAllocs()
	for b.Loop() {
		c.respond(id, api.MethodIsStepUpRequired, res, nil)
	}
}

// BenchmarkConnectRequest is a new connection per request: connect, one
// request and its answer, close (the agent identifies the caller at
// accept). Allocations count both ends.
func BenchmarkConnectRequest(b *testing.B) {
	path := benchServer(b, benchHandler{})
	req := benchRequest(1)
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || !bytes.Contains(buf[:n], []byte(`"result"`)) {
			b.Fatalf("answer %q: %v", buf[:n], err)
		}
		c.Close()
	}
}
