package stepup

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// agentChecks are isStepUpRequired results as the agent writes them.
func agentChecks() []api.StepUpRequired {
	exp := time.Date(2026, 12, 4, 2, 30, 0, 123456789, time.UTC)
	return []api.StepUpRequired{
		{Required: true, Scope: "wallet:export", Methods: []string{}, CheckExtras: api.CheckExtras{Bind: "client"}},
		{Required: true, Scope: "wallet:export", Methods: []string{"totp", "recovery"}, DefaultMethod: "totp",
			CheckExtras: api.CheckExtras{Credentials: []api.CredentialRef{{ID: "c1", Method: "totp", Label: "Phone – Aegis"}, {ID: "c2", Method: "recovery", Label: ""}},
				DefaultCredentialID: "c1", Bind: "session"}},
		{Required: false, Scope: "wallet:sign", Methods: []string{}, ExpiresAt: &exp, CheckExtras: api.CheckExtras{Bind: "process"}},
		{Required: true, Scope: "a:b", Methods: []string{"password"}, DefaultMethod: "password", CheckExtras: api.CheckExtras{Locked: true, Bind: "user"}},
	}
}

// The readers take what the agent writes, and read it as encoding/json
// does: the fast path is the path, not a fallback that never runs.
func TestDecodeTakesAgentAnswers(t *testing.T) {
	for _, want := range agentChecks() {
		res, err := want.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		line := append(append([]byte(`{"jsonrpc":"2.0","id":12,"result":`), res...), "}\n"...)
		var resp response
		if !scanResponse(line, &resp) || string(resp.ID) != "12" || !bytes.Equal(resp.Result, res) {
			t.Fatalf("scanResponse(%s) = %q %q", line, resp.ID, resp.Result)
		}
		var got api.StepUpRequired
		if !scanCheck(resp.Result, &got) {
			t.Fatalf("scanCheck refused %s", res)
		}
		var slow api.StepUpRequired
		if err := json.Unmarshal(res, &slow); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, slow) {
			t.Errorf("scanCheck(%s)\n got %+v\nwant %+v", res, got, slow)
		}
	}
}

// Error answers, null ids and results, and what encoding/json would read
// differently go to encoding/json; so does a result into a value that is
// not zero (encoding/json keeps the members the answer leaves out).
func TestDecodeLeavesTheRestToEncodingJSON(t *testing.T) {
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}`,
		`{"jsonrpc":"2.0","id":3,"error":{"code":4001,"message":"x"}}`,
		`{"jsonrpc":"2.0","id":3,"result":null}`,
		`{"jsonrpc":"2.0","ID":3,"result":{}}`,
		`{"jsonrpc":"2.0","id":3,"result":{},"Error":{"code":1,"message":"x"}}`,
		`{"jsonrpc":"2.0","id":3}`,
		`{"jsonrpc":"2.0","id":3,"result":{}} x`,
	} {
		var resp response
		if scanResponse([]byte(line), &resp) {
			t.Errorf("scanResponse took %s", line)
		}
	}
	for _, res := range []string{
		`{"Required":true}`, `{"required":null}`, `{"scope":"a\u0041"}`, `{"scope":"\xff"}`,
		`{"methods":["totp",null]}`, `{"credentials":[{"ID":"x"}]}`, `{"expiresAt":"yesterday"}`,
		`{"required":1}`,
		`{"required":true,"credentials":[{"id":"a","method":"totp","label":"L"}],"credentials":[{"id":"b"}]}`,
		`{"required":true,"required":false}`,
	} {
		var r api.StepUpRequired
		if scanCheck([]byte(res), &r) {
			t.Errorf("scanCheck took %s", res)
		}
	}
	r := api.StepUpRequired{DefaultMethod: "kept"}
	if err := decodeResult([]byte(`{"required":true,"scope":"s","methods":[]}`), &r); err != nil || r.DefaultMethod != "kept" || !r.Required {
		t.Errorf("decode into a used value: %+v, %v", r, err)
	}
	var bad api.StepUpRequired
	if err := decodeResult([]byte(`{"required":"yes"}`), &bad); err == nil {
		t.Error("a result encoding/json refuses decoded without error")
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, c := range agentChecks() {
		res, _ := c.AppendJSON(nil)
		f.Add(append(append([]byte(`{"jsonrpc":"2.0","id":7,"result":`), res...), '}'))
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"id":2,"result":[1,{"a":"\u00e9"}],"x":null}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":"7","error":null,"result":{}}`))
	f.Add([]byte(` { "id" : 1 , "result" : true } `))
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast response
		if !scanResponse(line, &fast) {
			return
		}
		var slow response
		if err := json.Unmarshal(line, &slow); err != nil {
			t.Fatalf("scanResponse took %q, encoding/json refuses it: %v", line, err)
		}
		if !bytes.Equal(fast.ID, slow.ID) || !bytes.Equal(fast.Result, slow.Result) || slow.Error != nil {
			t.Fatalf("%q: scanResponse id %q result %q; encoding/json id %q result %q error %v", line, fast.ID, fast.Result, slow.ID, slow.Result, slow.Error)
		}
	})
}

func FuzzDecodeCheck(f *testing.F) {
	for _, c := range agentChecks() {
		res, _ := c.AppendJSON(nil)
		f.Add(res)
	}
	f.Add([]byte(`{"required":true,"methods":["a"],"x":{"y":[1,2,{}]}}`))
	f.Add([]byte(`{"expiresAt":"2026-12-04T02:30:00+01:00","credentials":[{"id":"a","id":"b","z":1}]}`))
	f.Add([]byte(`{"required":true,"credentials":[{"id":"a","method":"totp","label":"L"}],"credentials":[{"id":"b"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast api.StepUpRequired
		if !scanCheck(b, &fast) {
			return
		}
		var slow api.StepUpRequired
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("scanCheck took %q, encoding/json refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\nscanCheck    %+v\nencoding/json %+v", b, fast, slow)
		}
	})
}
