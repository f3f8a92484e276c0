package prompt

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// FuzzParseResponse: any line a pinentry could send (or a hostile program
// posing as one) decodes without panic and without growing; a data line
// re-encodes to the same bytes; a connection given the line ends its
// transaction. The round trip is checked only where pinentry's own
// encoding would carry the data on one line: raw control bytes in a D line
// (which pinentry never sends unescaped) expand threefold on re-encoding,
// and past maxLine the re-encoded line is rightly refused as too long.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{"OK", "D 12%0A", "ERR 83886179 Operation cancelled <Pinentry>", "S ERROR tty.? 83886142 ", "INQUIRE X", "# c", "D %", "D %%%", "ERR 1 %zz", "D \x01\x02", "OK Pleased to meet you\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseResponse(line)
		if err != nil {
			return
		}
		if len(r.data) > len(line) || len(r.text) > 3*len(line)+3 {
			t.Fatalf("grew: %q -> %+v", line, r)
		}
		if r.kind == respData {
			enc := "D " + assuanEscape(string(r.data))
			if len(enc) <= maxLine {
				d, err := parseResponse([]byte(enc))
				if err != nil || !bytes.Equal(d.data, r.data) {
					t.Fatalf("re-encoding %q: %q, %v", r.data, d.data, err)
				}
			}
		}
		// The same bytes through a connection give an answer or an error,
		// never a hang.
		c := newAssuanConn(io.Discard, bufio.NewReader(bytes.NewReader(append(append([]byte{}, line...), '\n'))))
		c.transact("") //nolint:errcheck
	})
}
