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

// LineHash is the hex SHA-256 of a line without its newline.
func LineHash(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// RotatedName is the name a rotated file gets: audit.jsonl whose first
// record is seq 101 becomes audit-000000000101.jsonl.
func RotatedName(path string, first int64) string {
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

// OpenFile opens a log file, decompressing a .gz one.
func OpenFile(name string) (io.ReadCloser, error) {
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

// Line is one line of a log file.
type Line struct {
	Raw  []byte // without the newline
	Torn bool   // no newline at the end of the file
	N    int    // line number, from 1
	Rec  *ChainFields
	Err  error // not a record
}

// ChainFields are what the chain needs of a record.
type ChainFields struct {
	Seq   int64  `json:"seq"`
	Prev  string `json:"prev"`
	Event string `json:"event"`
	JWS   string `json:"jws"`
	Head  string `json:"head"`
}

// EachLine calls fn for every line of r; fn returning false stops.
func EachLine(r io.Reader, fn func(l Line) bool) error {
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
		l := Line{N: n, Torn: err == io.EOF}
		l.Raw = append([]byte(nil), strings.TrimSuffix(string(b), "\n")...)
		var c ChainFields
		if e := json.Unmarshal(l.Raw, &c); e != nil {
			l.Err = errors.New("not a JSON record")
		} else if c.Seq <= 0 || len(c.Prev) != 64 {
			l.Err = errors.New("record has no seq and prev")
		} else {
			l.Rec = &c
		}
		if !fn(l) || err == io.EOF {
			return nil
		}
	}
}

// ReadLines reads every line of a file.
func ReadLines(name string) ([]Line, error) {
	rc, err := OpenFile(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out []Line
	err = EachLine(rc, func(l Line) bool { out = append(out, l); return true })
	return out, err
}

// ReadRecords calls fn with every line of a log file (a .gz one too) and
// the record it holds (nil when the line is not a record).
func ReadRecords(name string, fn func(raw []byte, r *Record) error) error {
	rc, err := OpenFile(name)
	if err != nil {
		return err
	}
	defer rc.Close()
	var ferr error
	err = EachLine(rc, func(l Line) bool {
		var r *Record
		if !l.Torn {
			var rec Record
			if json.Unmarshal(l.Raw, &rec) == nil {
				r = &rec
			}
		}
		ferr = fn(l.Raw, r)
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// FirstSeq is the seq of a file's first record.
func FirstSeq(name string) (int64, error) { return firstSeq(name) }

func firstSeq(path string) (int64, error) {
	rc, err := OpenFile(path)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	var seq int64
	err = EachLine(rc, func(l Line) bool {
		if l.Rec != nil {
			seq = l.Rec.Seq
		}
		return false
	})
	if seq == 0 && err == nil {
		err = errors.New("the audit file's first record has no seq")
	}
	return seq, err
}
