package ipc

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzEnvelope holds the scanner to encoding/json: whatever line it
// accepts, encoding/json decodes without error to the same id, method,
// jsonrpc and params. Lines it declines go to encoding/json itself.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"isStepUpRequired","params":{"scope":"wallet:export"}}`,
		` { "id" : "a\"b" , "method" : "x" , "jsonrpc" : "2.0" , "params" : [1,-2.5e3,true,null,{"k":"\u00e9"}] } `,
		`{"jsonrpc":"2.0","id":null,"method":"m","params":null}`,
		`{"jsonrpc":"2.0","ID":1,"method":"m"}`,
		`{"method":"a","method":"b","id":1,"id":2}`,
		`{"jsonrpc":"2.0","method":"m\u0041"}`,
		`{"jsonrpc":"2.0","method":null}`,
		`{"x":{"y":[{}]},"jsonrpc":"2.0","method":"\xff"}`,
		`{"jsonrpc":"2.0","id":01,"method":"m"}`,
		`{"jsonrpc":"2.0","id":1,"method":"m"} x`,
		`{"jsonrpc":2,"method":"m"}`,
		`[{"jsonrpc":"2.0","method":"m"}]`,
		`{"jsonrpc":"2.0","id":1e999,"method":"m","ſ":1}`,
		`{"jsonrpc":"2.0","jſonrpc":"1.0","id":1,"method":"m"}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		env, ok := scanEnvelope(line)
		if !ok {
			return
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			t.Fatalf("the scanner accepted %q, encoding/json refuses it: %v", line, err)
		}
		if !bytes.Equal(env.ID, req.ID) || (env.ID == nil) != (req.ID == nil) {
			t.Fatalf("%q: id %q, encoding/json %q", line, env.ID, req.ID)
		}
		if !bytes.Equal(env.Params, req.Params) || (env.Params == nil) != (req.Params == nil) {
			t.Fatalf("%q: params %q, encoding/json %q", line, env.Params, req.Params)
		}
		if string(env.JSONRPC) != req.JSONRPC {
			t.Fatalf("%q: jsonrpc %q, encoding/json %q", line, env.JSONRPC, req.JSONRPC)
		}
		if env.hasMethod != (req.Method != nil) || req.Method != nil && string(env.Method) != *req.Method {
			t.Fatalf("%q: method %q (%v), encoding/json %v", line, env.Method, env.hasMethod, req.Method)
		}
	})
}

// The scanner takes the requests clients send; the odd ones go to
// encoding/json, and both answer alike.
func TestEnvelopeShapes(t *testing.T) {
	for line, fast := range map[string]bool{
		`{"jsonrpc":"2.0","id":1,"method":"isStepUpRequired","params":{"scope":"wallet:export"}}`: true,
		`{"jsonrpc":"2.0","id":"x","method":"status"}`:                                            true,
		`{"jsonrpc":"2.0","ID":1,"method":"status"}`:                                              false,
		`{"jsonrpc":"2.0","id":1,"method":"st\u0061tus"}`:                                         false,
		`{"jsonrpc":"2.0","id":1,"method":"status"}]`:                                             false,
		// 8 bytes: the long s folds to s, and encoding/json takes it for jsonrpc.
		`{"jsonrpc":"2.0","jſonrpc":"1.0","id":1,"method":"status"}`: false,
	} {
		if _, ok := scanEnvelope([]byte(line)); ok != fast {
			t.Errorf("scanEnvelope(%s) = %v, want %v", line, ok, fast)
		}
		var out bytes.Buffer
		c := benchConn(&out)
		c.handleLine([]byte(line + "\n"))
		c.flush()
		var ans map[string]json.RawMessage
		if err := json.Unmarshal(out.Bytes(), &ans); err != nil || string(ans["jsonrpc"]) != `"2.0"` {
			t.Errorf("%s: answer %q", line, out.Bytes())
		}
	}
}
