package api

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

var allMethods = Methods

// TestProtocolDoc keeps docs/protocol.md honest: every method is
// documented, every example line is well-formed JSON-RPC naming a real
// method, every answer is a response to the request before it, and every
// error code and reason in the table is the one this package defines.
func TestProtocolDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, m := range allMethods {
		if !regexp.MustCompile(`(?m)^### .*\b` + m + `\b`).MatchString(text) {
			t.Errorf("method %s has no section in docs/protocol.md", m)
		}
	}
	var lastID json.RawMessage
	var lastMethod string
	examples := 0
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		req, isReq := strings.CutPrefix(line, "--> ")
		resp, isResp := strings.CutPrefix(line, "<-- ")
		switch {
		case isReq:
			examples++
			var r struct {
				JSONRPC string          `json:"jsonrpc"`
				ID      json.RawMessage `json:"id"`
				Method  string          `json:"method"`
			}
			if err := json.Unmarshal([]byte(req), &r); err != nil {
				// The -32700 example is deliberately not JSON.
				lastID, lastMethod = json.RawMessage("null"), ""
				continue
			}
			known := false
			for _, m := range allMethods {
				known = known || m == r.Method
			}
			if r.JSONRPC != "2.0" || (!known && r.Method != "frobnicate") {
				t.Errorf("line %d: not a request for a known method: %s", i+1, req)
			}
			lastID, lastMethod = r.ID, r.Method
		case isResp:
			var r struct {
				JSONRPC string          `json:"jsonrpc"`
				ID      json.RawMessage `json:"id"`
				Result  json.RawMessage `json:"result"`
				Error   *Error          `json:"error"`
			}
			if err := json.Unmarshal([]byte(resp), &r); err != nil {
				t.Errorf("line %d: answer is not JSON: %v", i+1, err)
				continue
			}
			if r.JSONRPC != "2.0" || (r.Result == nil) == (r.Error == nil) {
				t.Errorf("line %d: not a JSON-RPC response", i+1)
			}
			if lastID != nil && string(r.ID) != string(lastID) && string(r.ID) != "null" {
				t.Errorf("line %d: answer id %s does not match request id %s (%s)", i+1, r.ID, lastID, lastMethod)
			}
			if r.Error != nil && (Reason(r.Error.Code) != r.Error.Data.Reason || r.Error.Message == "") {
				t.Errorf("line %d: error %d has reason %q, want %q", i+1, r.Error.Code, r.Error.Data.Reason, Reason(r.Error.Code))
			}
		}
	}
	if examples < len(allMethods) {
		t.Errorf("only %d example requests", examples)
	}
	row := regexp.MustCompile("(?m)^\\| (-?\\d+) \\| `([a-z_]+)` \\|")
	rows := row.FindAllStringSubmatch(text, -1)
	if len(rows) != len(reasons) {
		t.Errorf("error table has %d rows, api defines %d codes", len(rows), len(reasons))
	}
	for _, r := range rows {
		var code int
		json.Unmarshal([]byte(r[1]), &code)
		if Reason(code) != r[2] {
			t.Errorf("error table: %s is %q in the doc, %q in api", r[1], r[2], Reason(code))
		}
	}
}
