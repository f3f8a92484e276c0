package ipc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"testing"
	"time"
)

// FuzzServeStream feeds arbitrary bytes to a live server as one client's
// stream (the framing and the JSON-RPC decoder together): the server never
// panics or hangs, every line it writes is one JSON-RPC 2.0 answer, it
// answers no more lines than it was sent, and the connection ends when the
// client's input does. Seeds: below and testdata/fuzz/FuzzServeStream.
func FuzzServeStream(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":1}}` + "\n",
		`{"jsonrpc":"2.0","id":"x","method":"echo"}` + "\r\n" + `{"jsonrpc":"2.0","method":"echo"}` + "\n",
		"[1,2]\n{}\nnull\n\"s\"\n",
		`{"jsonrpc":"2.0","id":{},"method":"echo"}` + "\n",
		`{"jsonrpc":"2.0","id":1,"method":"echo","params":1}`, // no newline, then EOF
		"\n\n \t\n",
		"\xff\xfe{\n",
		`{"jsonrpc":"2.0","id":1e999,"method":"echo"}` + "\n",
		`{"jsonrpc":"2.0","id":1,"method":"slow"}` + "\n" + `{"jsonrpc":"2.0","id":2,"method":"internal"}` + "\n",
	} {
		f.Add([]byte(s))
	}
	path, _ := startServerWith(f, &testHandler{}, func(s *Server) { s.LineTimeout = 2 * time.Second })
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			c.Write(in)
			c.(*net.UnixConn).CloseWrite()
		}()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		lines := bytes.Count(in, []byte("\n")) + 1
		n := 0
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				if len(line) > 0 {
					t.Fatalf("a partial answer line %q", line)
				}
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the server did not end the connection: %v", err)
				}
				break
			}
			n++
			var m map[string]json.RawMessage
			err = json.Unmarshal(line, &m)
			_, hasID := m["id"]
			_, hasResult := m["result"]
			e, hasError := m["error"]
			if err != nil || string(m["jsonrpc"]) != `"2.0"` || !hasID || hasResult == hasError || len(m) != 3 {
				t.Fatalf("not a JSON-RPC answer: %q (%v)", line, err)
			}
			if hasError {
				var eo struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
					Data    struct {
						Reason string `json:"reason"`
					} `json:"data"`
				}
				if json.Unmarshal(e, &eo) != nil || eo.Code == 0 || eo.Message == "" || eo.Data.Reason == "" {
					t.Fatalf("an error without code, message or reason: %q", line)
				}
			}
		}
		if n > lines {
			t.Fatalf("%d answers to %d lines", n, lines)
		}
	})
}
