package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// countingHandler counts the requests it serves.
type countingHandler struct {
	testHandler
	n atomic.Int64
}

func (h *countingHandler) Handle(ctx context.Context, m string, params json.RawMessage) (any, error) {
	h.n.Add(1)
	return h.testHandler.Handle(ctx, m, params)
}

// pipeline writes n echo requests on c from a goroutine and reports the
// first write error on the returned channel.
func pipeline(c net.Conn, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		for i := 0; i < n; i++ {
			if _, err := fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%d,"method":"echo","params":{"i":%d}}`+"\n", i, i); err != nil {
				done <- err
				return
			}
		}
		done <- w.Flush()
	}()
	return done
}

// A client that pipelines 100,000 requests without reading, then reads,
// gets every answer: the server stops reading while its answers wait
// (backpressure) instead of dropping them, and serves on once they are read.
func TestPipelineWithoutReadingThenRead(t *testing.T) {
	h := &countingHandler{}
	path, _ := startServerWith(t, h, func(s *Server) { s.WriteTimeout = 5 * time.Second })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100000
	werr := pipeline(c, n)
	// Not reading for a while: the server must stop taking requests, not
	// buffer answers without bound.
	served := h.n.Load()
	for i := 0; ; i++ {
		time.Sleep(300 * time.Millisecond)
		again := h.n.Load()
		if again == served {
			break
		}
		if i == 20 {
			t.Fatalf("server went on serving while its answers were not read: %d of %d", again, n)
		}
		served = again
	}
	if served >= n/4 {
		t.Fatalf("server served %d of %d requests whose answers were not read", served, n)
	}
	t.Logf("served %d of %d before backpressure held", served, n)
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := 0; i < n; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if want := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{"i":%d}}`+"\n", i, i); line != want {
			t.Fatalf("answer %d = %q, want %q", i, line, want)
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	// The connection is still usable.
	fmt.Fprintf(c, `{"jsonrpc":"2.0","id":"again","method":"echo","params":1}`+"\n")
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, `"again"`) {
		t.Fatalf("a request after the burst: %q, %v", line, err)
	}
}

// A client that does not read its answers for longer than the write
// timeout gets the answers already sent, then one error line saying why
// the connection ends, then end of file: never silence.
func TestStalledClientGetsErrorLine(t *testing.T) {
	h := &countingHandler{}
	core, logs := observer.New(zap.WarnLevel)
	path, _ := startServerWith(t, h, func(s *Server) { s.WriteTimeout = 300 * time.Millisecond; s.Log = zap.New(core) })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100000
	werr := pipeline(c, n)
	// Wait until the server has given up on the client (however slow
	// this machine is), then read.
	for logs.FilterMessageSnippet("does not read its answers").Len() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	answers := 0
	var last string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		if strings.Contains(line, `"error"`) {
			last = line
			continue
		}
		if last != "" {
			t.Fatalf("an answer after the error line: %q", line)
		}
		answers++
	}
	if !strings.Contains(last, `"code":-32600`) || !strings.Contains(last, "not read") || !strings.Contains(last, `"hint"`) {
		t.Fatalf("last line = %q; want a -32600 error line saying the answers were not read", last)
	}
	if served := h.n.Load(); int64(answers) > served || served >= n {
		t.Fatalf("%d answers, %d served of %d", answers, served, n)
	}
	<-werr // the writer ends, one way or the other
	t.Logf("%d answers, then %s", answers, last)
}
