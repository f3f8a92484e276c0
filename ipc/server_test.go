package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// testHandler echoes params for "echo", blocks until its context is done
// for "block" (reporting on blocked), and fails otherwise.
type testHandler struct {
	blocked chan error
}

func (h *testHandler) Blocking(m string) bool { return m == "block" || m == "slow" }

func (h *testHandler) Handle(ctx context.Context, m string, params json.RawMessage) (any, error) {
	switch m {
	case "echo":
		return params, nil
	case "block":
		<-ctx.Done()
		if h.blocked != nil {
			h.blocked <- ctx.Err()
		}
		return nil, api.Errorf(api.CodeCancelled, "cancelled")
	case "slow":
		select {
		case <-time.After(300 * time.Millisecond):
			return "done", nil
		case <-ctx.Done():
			return nil, api.Errorf(api.CodeCancelled, "cancelled")
		}
	case "internal":
		return nil, context.DeadlineExceeded // a non-API error: its text stays inside
	}
	return nil, api.Errorf(api.CodeMethodNotFound, "unknown method %q", m)
}

// immediateHandler is testHandler with "echo" (and, which the server
// must not take up, the blocking "block") immediate: the first request of
// a connection may be answered by the accepting goroutine.
type immediateHandler struct{ testHandler }

func (h *immediateHandler) Immediate(m string) bool { return m == "echo" || m == "block" }

// bothHandlers runs a test against a testHandler and an immediateHandler,
// each with a blocked channel of its own.
func bothHandlers(t *testing.T, test func(t *testing.T, h Handler, blocked chan error)) {
	t.Run("inline", func(t *testing.T) {
		b := make(chan error, 1)
		test(t, &testHandler{blocked: b}, b)
	})
	t.Run("immediate", func(t *testing.T) {
		b := make(chan error, 1)
		test(t, &immediateHandler{testHandler{blocked: b}}, b)
	})
}

func startServer(t *testing.T, h Handler) (string, *Server) {
	t.Helper()
	return startServerWith(t, h, nil)
}

// startServerWith starts a server on h after set has adjusted it.
func startServerWith(t testing.TB, h Handler, set func(*Server)) (string, *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h, UID: -1}
	if set != nil {
		set(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return path, srv
}

func roundTrip(t *testing.T, path, in string, answers int) []string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for i := 0; i < answers; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("answer %d: %v (got %q)", i, err, out)
		}
		out = append(out, strings.TrimSpace(line))
	}
	return out
}

func TestFraming(t *testing.T) { bothHandlers(t, testFraming) }

func testFraming(t *testing.T, h Handler, _ chan error) {
	path, _ := startServer(t, h)
	cases := []struct {
		name, in string
		want     []string
	}{
		{"echo", `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":1}}` + "\n",
			[]string{`{"jsonrpc":"2.0","id":1,"result":{"a":1}}`}},
		{"string id, CRLF", `{"jsonrpc":"2.0","id":"x","method":"echo","params":[1]}` + "\r\n",
			[]string{`{"jsonrpc":"2.0","id":"x","result":[1]}`}},
		{"parse error then a good line", "{nope\n" + `{"jsonrpc":"2.0","id":3,"method":"echo"}` + "\n",
			[]string{`"code":-32700`, `"id":3,"result":null`}},
		{"wrong version", `{"jsonrpc":"1.0","id":4,"method":"echo"}` + "\n", []string{`"id":4,"error":{"code":-32600`}},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"echo"}` + "\n", []string{`"id":null,"error":{"code":-32600`}},
		{"notification then request", `{"jsonrpc":"2.0","method":"echo"}` + "\n" + `{"jsonrpc":"2.0","id":5,"method":"echo"}` + "\n",
			[]string{`"id":5,"result":null`}},
		{"internal error hides its text", `{"jsonrpc":"2.0","id":6,"method":"internal"}` + "\n",
			[]string{`"id":6,"error":{"code":-32603,"message":"internal error in internal; see the agent's log"`}},
		{"pipelined, in order", `{"jsonrpc":"2.0","id":7,"method":"echo","params":1}` + "\n" + `{"jsonrpc":"2.0","id":8,"method":"echo","params":2}` + "\n" + `{"jsonrpc":"2.0","id":9,"method":"nope"}` + "\n",
			[]string{`"id":7,"result":1`, `"id":8,"result":2`, `"id":9,"error":{"code":-32601`}},
		{"blank lines first", "\n  \n" + `{"jsonrpc":"2.0","id":10,"method":"echo","params":3}` + "\n",
			[]string{`"id":10,"result":3`}},
		{"first line a notification", `{"jsonrpc":"2.0","method":"echo","params":1}` + "\n" + `{"jsonrpc":"2.0","id":11,"method":"echo","params":4}` + "\n",
			[]string{`"id":11,"result":4`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := roundTrip(t, path, tc.in, len(tc.want))
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("answer %d = %s, want it to contain %s", i, got[i], w)
				}
			}
		})
	}
}

// A last line without its newline is served when the client shuts down
// its side (as socat does at the end of its input).
func TestLastLineAtHalfClose(t *testing.T) { bothHandlers(t, testLastLineAtHalfClose) }

func testLastLineAtHalfClose(t *testing.T, h Handler, _ chan error) {
	path, _ := startServer(t, h)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(`{"jsonrpc":"2.0","id":2,"method":"echo","params":null}`))
	c.(*net.UnixConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != `{"jsonrpc":"2.0","id":2,"result":null}` {
		t.Fatalf("got %q, %v", line, err)
	}
}

func TestLongLineClosesConnection(t *testing.T) {
	path, _ := startServer(t, &testHandler{})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(append(bytes.Repeat([]byte("x"), MaxLine+10), '\n'))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, `"code":-32600`) {
		t.Fatalf("got %q, %v", line, err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after an oversized line")
	}
	// Exactly MaxLine bytes is accepted.
	exact := `{"jsonrpc":"2.0","id":1,"method":"echo","params":"` + strings.Repeat("y", MaxLine-52) + `"}`
	if len(exact) != MaxLine {
		t.Fatalf("test line is %d bytes", len(exact))
	}
	got := roundTrip(t, path, exact+"\n", 1)
	if !strings.Contains(got[0], `"result"`) {
		t.Fatalf("a line of exactly %d bytes was refused: %.100s", MaxLine, got[0])
	}
}

func TestHangUpCancelsBlockingRequest(t *testing.T) { bothHandlers(t, testHangUpCancels) }

func testHangUpCancels(t *testing.T, h Handler, blocked chan error) {
	path, _ := startServer(t, h)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"block"}` + "\n"))
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-blocked:
		if err != context.Canceled {
			t.Fatalf("handler saw %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context was not cancelled when the client hung up")
	}
}

// A client that only shuts down its writing side (printf ... | socat)
// still gets the answer of a request that takes a while.
func TestHalfCloseIsNotAHangUp(t *testing.T) {
	path, _ := startServer(t, &testHandler{})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"slow"}` + "\n"))
	c.(*net.UnixConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"id":1,"result":"done"`) {
		t.Fatalf("got %q, %v", line, err)
	}
}

func TestOutOfOrderAnswers(t *testing.T) { bothHandlers(t, testOutOfOrderAnswers) }

func testOutOfOrderAnswers(t *testing.T, h Handler, _ chan error) {
	path, _ := startServer(t, h)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A blocking request does not hold up the ones behind it.
	c.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"block"}` + "\n" + `{"jsonrpc":"2.0","id":2,"method":"echo","params":7}` + "\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"id":2,"result":7`) {
		t.Fatalf("got %q, %v", line, err)
	}
}

func TestShutdownCancelsAfterGrace(t *testing.T) {
	h := &testHandler{blocked: make(chan error, 1)}
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h, UID: -1}
	go srv.Serve(ln)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"block"}` + "\n"))
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { srv.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := <-h.blocked; err != context.Canceled {
		t.Fatalf("blocked request saw %v", err)
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

// FuzzHandleLine feeds arbitrary request lines to the decoder and
// dispatcher: it must never panic, and every answer must be one JSON-RPC
// 2.0 response object on one line.
func FuzzHandleLine(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"scope":"wallet:export"}}`,
		`{"jsonrpc":"2.0","id":"a","method":"nope"}`,
		`{"jsonrpc":"2.0","method":"echo"}`,
		`{"jsonrpc":"2.0","id":null,"method":"echo","params":[]}`,
		`[{"jsonrpc":"2.0","id":1,"method":"echo"}]`,
		`{"jsonrpc":"2.0","id":1.5e3,"method":"echo"}`,
		`{"jsonrpc":"2.0","id":true,"method":"echo"}`,
		`{"jsonrpc":"2.0","id":1,"method":7}`,
		`{"id":1,"method":"echo"}`,
		`{`, `null`, `"x"`, ``, "\xff\xfe", `{"jsonrpc":"2.0","id":-0,"method":"echo","params":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var out bytes.Buffer
		srv := &Server{Handler: &testHandler{}}
		srv.init()
		c := &conn{srv: srv, ctx: context.Background(), cancel: func() {}}
		c.w = bufio.NewWriter(&out)
		c.handleLine(line)
		c.w.Flush()
		if out.Len() == 0 {
			return // a notification, or blank
		}
		if bytes.Count(out.Bytes(), []byte("\n")) != 1 || out.Bytes()[out.Len()-1] != '\n' {
			t.Fatalf("answer is not one line: %q", out.String())
		}
		var resp map[string]json.RawMessage
		if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
			t.Fatalf("answer is not JSON: %v: %q", err, out.String())
		}
		_, hasResult := resp["result"]
		_, hasError := resp["error"]
		if string(resp["jsonrpc"]) != `"2.0"` || hasResult == hasError || resp["id"] == nil {
			t.Fatalf("not a JSON-RPC 2.0 response: %q", out.String())
		}
		if hasError {
			var e api.Error
			if json.Unmarshal(resp["error"], &e) != nil || e.Data.Reason == "" || e.Message == "" {
				t.Fatalf("error without a message or reason: %q", out.String())
			}
		}
	})
}
