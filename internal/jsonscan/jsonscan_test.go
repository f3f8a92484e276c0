package jsonscan

import (
	"encoding/json"
	"testing"
)

// The scanner's grammar is encoding/json's: a text it scans whole is
// valid JSON, and the texts it refuses here are refused there too. (The
// readers built on it are fuzzed against encoding/json in ipc and
// ipc/stepup.)
func TestValueAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{}`, `[]`, `{"a":[1,-0.5e+3,true,false,null,"\u00e9\n"],"b":{"c":{}}}`, ` "x" `, `0`, `-12.0E7`,
		`{"a":1,}`, `[1,]`, `01`, `1.`, `-`, `"\x"`, `"\u12"`, "\"a\tb\"", `{"a" 1}`, `tru`, `[1 2]`, `{"a":1}}`,
	} {
		s := Scanner{B: []byte(in)}
		s.Space()
		scanned := s.Value(0) && s.End()
		if valid := json.Valid([]byte(in)); scanned != valid {
			t.Errorf("%q: scanned %v, encoding/json says valid %v", in, scanned, valid)
		}
	}
	deep := make([]byte, 0, 2*(MaxDepth+2))
	for range MaxDepth + 2 {
		deep = append(deep, '[')
	}
	for range MaxDepth + 2 {
		deep = append(deep, ']')
	}
	if s := (Scanner{B: deep}); s.Value(0) {
		t.Error("a text nested deeper than MaxDepth was scanned")
	}
}

func TestObjectArrayAndFolds(t *testing.T) {
	s := Scanner{B: []byte(` { "a" : [ "x" , "y" ] , "b" : true } `)}
	var keys []string
	var elems []string
	ok := s.Object(func(key []byte) bool {
		keys = append(keys, string(key))
		if string(key) == "a" {
			return s.Array(func() bool {
				v, ok := s.PlainString()
				elems = append(elems, v)
				return ok
			})
		}
		v, ok := s.Bool()
		return ok && v
	}) && s.End()
	if !ok || len(keys) != 2 || keys[1] != "b" || len(elems) != 2 || elems[1] != "y" {
		t.Fatalf("Object: ok %v keys %q elems %q", ok, keys, elems)
	}
	for _, tc := range []struct {
		key  string
		want bool
	}{{"id", false}, {"ID", true}, {"Id", true}, {"\u212a", true} /* Kelvin sign folds to k */, {"x", false}} {
		if got := Folds([]byte(tc.key), "id", "k"); got != tc.want {
			t.Errorf("Folds(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
	if _, ok := (&Scanner{B: []byte(`"a\u0041"`)}).PlainString(); ok {
		t.Error("PlainString took an escape")
	}
	if _, ok := (&Scanner{B: []byte("\"\xff\"")}).PlainString(); ok {
		t.Error("PlainString took invalid UTF-8")
	}
}
