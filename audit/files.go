package audit

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// maxLine bounds one record's line when reading.
const maxLine = 1 << 20

// lineHash is the hex SHA-256 of a line without its newline.
func lineHash(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// rotatedName is the name a rotated file gets: audit.jsonl whose first
// record is seq 101 becomes audit-000000000101.jsonl.
func rotatedName(path string, first int64) string {
	dir, base := filepath.Split(path)
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	return filepath.Join(dir, fmt.Sprintf("%s-%012d%s", stem, first, ext))
}

// SetFiles lists the files of the log at path in chain order: the rotated
// files (compressed or not) by their first seq, then path itself if it
// exists. Files set aside by a chain break are not part of the set.
func SetFiles(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	type rf struct {
		seq  int64
		name string
	}
	bySeq := map[int64]string{}
	for _, e := range ents {
		n := e.Name()
		rest, ok := strings.CutPrefix(n, stem+"-")
		if !ok {
			continue
		}
		gz := strings.HasSuffix(rest, ext+".gz")
		rest = strings.TrimSuffix(strings.TrimSuffix(rest, ".gz"), ext)
		if len(rest) != 12 {
			continue
		}
		seq, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			continue
		}
		// Both forms exist only after a crash while compressing: the
		// uncompressed one is complete.
		if _, dup := bySeq[seq]; dup && gz {
			continue
		}
		bySeq[seq] = filepath.Join(dir, n)
	}
	var list []rf
	for s, n := range bySeq {
		list = append(list, rf{s, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].seq < list[j].seq })
	var out []string
	for _, f := range list {
		out = append(out, f.name)
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out, nil
}

// open opens a log file, decompressing a .gz one.
func open(name string) (io.ReadCloser, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(name, ".gz") {
		return f, nil
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{z, f}, nil
}

// line is one line of a log file.
type line struct {
	raw  []byte // without the newline
	torn bool   // no newline at the end of the file
	n    int    // line number, from 1
	rec  *chainFields
	err  error // not a record
}

// chainFields are what the chain needs of a record.
type chainFields struct {
	Seq   int64  `json:"seq"`
	Prev  string `json:"prev"`
	Event string `json:"event"`
	JWS   string `json:"jws"`
	Head  string `json:"head"`
}

// eachLine calls fn for every line of r; fn returning false stops.
func eachLine(r io.Reader, fn func(l line) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		b, err := br.ReadSlice('\n')
		var long []byte
		for errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, b...)
			if len(long) > maxLine {
				return fmt.Errorf("line %d is longer than %d bytes", n+1, maxLine)
			}
			b, err = br.ReadSlice('\n')
		}
		if long != nil {
			b = append(long, b...)
		}
		if len(b) == 0 && err == io.EOF {
			return nil
		}
		if err != nil && err != io.EOF {
			return err
		}
		n++
		l := line{n: n, torn: err == io.EOF}
		l.raw = append([]byte(nil), strings.TrimSuffix(string(b), "\n")...)
		var c chainFields
		if e := json.Unmarshal(l.raw, &c); e != nil {
			l.err = errors.New("not a JSON record")
		} else if c.Seq <= 0 || len(c.Prev) != 64 {
			l.err = errors.New("record has no seq and prev")
		} else {
			l.rec = &c
		}
		if !fn(l) || err == io.EOF {
			return nil
		}
	}
}

// readLines reads every line of a file.
func readLines(name string) ([]line, error) {
	rc, err := open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out []line
	err = eachLine(rc, func(l line) bool { out = append(out, l); return true })
	return out, err
}

// ReadRecords calls fn with every line of a log file (a .gz one too) and
// the record it holds (nil when the line is not a record).
func ReadRecords(name string, fn func(raw []byte, r *Record) error) error {
	rc, err := open(name)
	if err != nil {
		return err
	}
	defer rc.Close()
	var ferr error
	err = eachLine(rc, func(l line) bool {
		var r *Record
		if !l.torn {
			var rec Record
			if json.Unmarshal(l.raw, &rec) == nil {
				r = &rec
			}
		}
		ferr = fn(l.raw, r)
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// FirstSeq is the seq of a file's first record.
func FirstSeq(name string) (int64, error) { return firstSeq(name) }
