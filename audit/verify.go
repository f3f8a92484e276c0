package audit

import (
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Problem is the first place where a log stops being intact.
type Problem struct {
	Seq    int64  `json:"seq"` // the first seq that cannot be vouched for
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Reason string `json:"reason"`
}

func (p *Problem) Error() string {
	where := ""
	if p.File != "" {
		where = fmt.Sprintf(" (%s line %d)", p.File, p.Line)
	}
	return fmt.Sprintf("seq %d%s: %s", p.Seq, where, p.Reason)
}

// Report is what Verify found.
type Report struct {
	Files       []string `json:"files"`
	Records     int      `json:"records"`
	First       int64    `json:"first"` // the first seq read
	Last        Head     `json:"last"`  // the last record read
	Checkpoints int      `json:"checkpoints"`
	// Unchecked counts checkpoints whose signature was not checked (no
	// keys given).
	Unchecked int      `json:"uncheckedCheckpoints,omitempty"`
	Problem   *Problem `json:"problem,omitempty"`
}

// VerifyOptions says what to check the files against.
type VerifyOptions struct {
	// JWKS holds the keys checkpoints must verify under; nil leaves
	// their signatures unchecked (counted in Report.Unchecked).
	JWKS *jose.JSONWebKeySet
	// Head, when set, is a head (auditHead, or a receipt) the log must
	// reach with the same hash.
	Head *Head
}

// Verify checks the chain of files, in the order given (rotated files
// first), and every checkpoint. It stops at the first problem.
func Verify(files []string, o VerifyOptions) (*Report, error) {
	rep := &Report{Files: files}
	var (
		expect   int64  // the next seq; 0 before the first record
		prevHash string // hash of the previous line
		headSeen bool
	)
	fail := func(seq int64, file string, n int, format string, args ...any) {
		rep.Problem = &Problem{Seq: seq, File: file, Line: n, Reason: fmt.Sprintf(format, args...)}
	}
	for _, name := range files {
		rc, err := OpenFile(name)
		if err != nil {
			return nil, err
		}
		err = EachLine(rc, func(l Line) bool {
			want := expect
			if want == 0 {
				want = 1
				if l.Rec != nil {
					want = l.Rec.Seq
				}
			}
			switch {
			case l.Torn:
				fail(want, name, l.N, "the record is cut short (no newline): the file was truncated or a write was torn")
				return false
			case l.Err != nil:
				fail(want, name, l.N, "%v: the line was changed", l.Err)
				return false
			}
			r := l.Rec
			switch {
			case r.Seq > want:
				fail(want, name, l.N, "found seq %d where seq %d belongs: records %d..%d are missing or out of order", r.Seq, want, want, r.Seq-1)
				return false
			case r.Seq < want:
				fail(want, name, l.N, "found seq %d where seq %d belongs: a record is repeated or out of order", r.Seq, want)
				return false
			}
			if expect == 0 {
				rep.First = r.Seq
				if r.Seq == 1 && r.Prev != Zero {
					fail(1, name, l.N, "the first record's prev is not 64 zeros")
					return false
				}
			} else if r.Prev != prevHash {
				fail(r.Seq-1, name, l.N-1, "record %d does not hash to the prev of record %d: one of them was changed", r.Seq-1, r.Seq)
				if l.N == 1 {
					rep.Problem.Line = 0
					rep.Problem.Reason += " (the previous file ends with another record)"
				}
				return false
			}
			h := LineHash(l.Raw)
			switch r.Event {
			case EventChainBreak:
				fail(r.Seq, name, l.N, "the agent recorded a chain break here: the log it found at start did not reach or chain from its head %s", r.Head)
				return false
			case EventCheckpoint:
				rep.Checkpoints++
				if o.JWKS == nil {
					rep.Unchecked++
				} else if err := checkJWS(r, o.JWKS); err != nil {
					fail(r.Seq, name, l.N, "checkpoint: %v", err)
					return false
				}
			}
			if o.Head != nil && r.Seq == o.Head.Seq {
				headSeen = true
				if h != o.Head.Hash {
					fail(r.Seq, name, l.N, "record %d is not the one the head names (hash %s): the log was rewritten", r.Seq, o.Head.Hash)
					return false
				}
			}
			rep.Records++
			rep.Last = Head{Seq: r.Seq, Hash: h}
			expect, prevHash = r.Seq+1, h
			return true
		})
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if rep.Problem != nil {
			return rep, nil
		}
	}
	if o.Head != nil && !headSeen {
		switch {
		case rep.Last.Seq < o.Head.Seq:
			fail(rep.Last.Seq+1, "", 0, "the log ends at seq %d, before the head seq %d: its tail was cut, or it was replaced by an older copy", rep.Last.Seq, o.Head.Seq)
		case o.Head.Seq > 0:
			fail(rep.First, "", 0, "the log starts at seq %d, after the head seq %d", rep.First, o.Head.Seq)
		}
	}
	return rep, nil
}

// checkJWS verifies a checkpoint's signature and that it covers this
// record's seq and prev.
func checkJWS(r *ChainFields, keys *jose.JSONWebKeySet) error {
	if r.JWS == "" {
		return fmt.Errorf("no jws")
	}
	sig, err := jose.ParseSigned(r.JWS, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || len(sig.Signatures) != 1 {
		return fmt.Errorf("the jws is not a compact EdDSA JWS")
	}
	kid := sig.Signatures[0].Header.KeyID
	ks := keys.Key(kid)
	if len(ks) == 0 {
		return fmt.Errorf("signed by key %q, which the key set does not hold", kid)
	}
	payload, err := sig.Verify(ks[0].Key)
	if err != nil {
		return fmt.Errorf("the signature does not verify under key %q", kid)
	}
	var p struct {
		Seq  int64  `json:"seq"`
		Prev string `json:"prev"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Seq != r.Seq || p.Prev != r.Prev {
		return fmt.Errorf("the signed payload is not this record's seq and prev")
	}
	return nil
}
