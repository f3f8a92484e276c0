package ipc

import (
	"bytes"
	"encoding/json"
	"sync"
	"unicode/utf8"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/jsonscan"
)

// The JSON-RPC envelope without encoding/json's reflection: scanEnvelope
// validates a request line and picks out its four members in one pass,
// without allocating. It takes only the plain shape of a request (an
// object whose keys are spelled exactly, a method and jsonrpc without
// escapes); for anything else it reports false and the line goes to
// encoding/json, which stays the one decoder of record: what the scanner
// accepts, encoding/json decodes to the same request (FuzzEnvelope checks
// it), and every error is encoding/json's.

// envelope is a request's members as they appear in the line: ID and
// Params are raw JSON values (nil when absent), Method and JSONRPC the
// string values' bytes.
type envelope struct {
	ID, Params      []byte
	Method, JSONRPC []byte
	hasMethod       bool
	hasJSONRPC      bool
}

// scanEnvelope scans line (one JSON text). ok is false when the line is
// not valid JSON, not an object, or not of the plain shape above.
func scanEnvelope(line []byte) (env envelope, ok bool) {
	s := jsonscan.Scanner{B: line}
	ok = s.Object(func(key []byte) bool {
		start := s.I
		switch string(key) {
		case "jsonrpc", "method":
			v, plain := s.Str()
			if !plain || !utf8.Valid(v) {
				return false
			}
			if key[0] == 'j' {
				env.JSONRPC = v
			} else {
				env.Method, env.hasMethod = v, true
			}
		case "id", "params":
			if !s.Value(0) {
				return false
			}
			if key[0] == 'i' {
				env.ID = line[start:s.I]
			} else {
				env.Params = line[start:s.I]
			}
		default:
			// A key encoding/json would match to a member in another
			// case ("ID", "jſonrpc" with a long s) leaves the line to it.
			return !jsonscan.Folds(key, "jsonrpc", "method", "id", "params") && s.Value(0)
		}
		return true
	}) && s.End()
	return env, ok
}

// decodeEnvelope decodes line with encoding/json, for what the scanner
// leaves: the error paths and unusual spellings.
func decodeEnvelope(line []byte) (envelope, error) {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return envelope{}, err
	}
	env := envelope{ID: req.ID, Params: req.Params, JSONRPC: []byte(req.JSONRPC)}
	if req.Method != nil {
		env.Method, env.hasMethod = []byte(*req.Method), true
	}
	return env, nil
}

// methodNames interns the protocol's method names, so that the method of
// a request costs no allocation; any other name is copied.
var methodNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range api.Methods {
		m[n] = n
	}
	return m
}()

func methodName(b []byte) string {
	if n, ok := methodNames[string(b)]; ok {
		return n
	}
	return string(b)
}

// JSONAppender is a result that writes its own JSON: the server appends
// it to the answer instead of calling encoding/json. AppendJSON must
// append exactly what json.Marshal would write for the value, and fail
// where json.Marshal fails.
type JSONAppender interface {
	AppendJSON(b []byte) ([]byte, error)
}

// Releaser is a result the server hands back once its answer is
// encoded (a pooled one goes back to its pool); the handler must not
// keep it.
type Releaser interface {
	Release()
}

// answerBuf is a pooled buffer an answer is encoded into, with an
// encoder bound to it (json.Encoder writes into the buffer, where
// json.Marshal would allocate a copy).
type answerBuf struct {
	b   bytes.Buffer
	enc *json.Encoder
}

var answerBufs = sync.Pool{New: func() any {
	a := &answerBuf{}
	a.enc = json.NewEncoder(&a.b)
	return a
}}

// maxPooled is the largest buffer put back in the pool.
const maxPooled = 16 << 10

func getAnswerBuf() *answerBuf {
	a := answerBufs.Get().(*answerBuf)
	a.b.Reset()
	return a
}

func putAnswerBuf(a *answerBuf) {
	if a.b.Cap() <= maxPooled {
		answerBufs.Put(a)
	}
}

// appendResult appends the answer line for a result: {"jsonrpc":"2.0",
// "id":ID,"result":RES}\n.
func (a *answerBuf) appendResult(id []byte, res any) error {
	if len(id) == 0 {
		id = nullID
	}
	a.b.WriteString(`{"jsonrpc":"2.0","id":`)
	a.b.Write(id)
	a.b.WriteString(`,"result":`)
	if ap, ok := res.(JSONAppender); ok {
		out, err := ap.AppendJSON(a.b.AvailableBuffer())
		if err != nil {
			return err
		}
		a.b.Write(out)
	} else {
		if err := a.enc.Encode(res); err != nil {
			return err
		}
		a.b.Truncate(a.b.Len() - 1) // Encode's newline
	}
	a.b.WriteString("}\n")
	return nil
}

var nullID = []byte("null")
