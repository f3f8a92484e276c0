package auditlog

import (
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/keychain"
	"go.uber.org/zap"
)

// The head lives in the keychain under this kind and name.
const (
	KindAudit = "audit"
	headName  = "head"
)

// Defaults of Options.
const (
	DefaultMaxSize         = 8 << 20
	DefaultCheckpointEvery = 100
	DefaultCheckpointAfter = 5 * time.Minute
)

// HeadStore keeps the head; keychain.Store is one.
type HeadStore interface {
	Get(ctx context.Context, kind, name string) ([]byte, error)
	Put(ctx context.Context, kind, name string, data []byte) error
}

// Rotation says when and how the log rotates (policy key audit).
type Rotation struct {
	MaxSize  int64 // bytes; 0 means DefaultMaxSize
	Keep     int   // rotated files kept; 0 keeps all
	Compress bool  // gzip rotated files
}

// Options configure Open.
type Options struct {
	Path string
	// Store keeps the head; nil keeps none (the log then chains, but a
	// cut tail or an older copy is not caught at start).
	Store HeadStore
	// Rotation returns the rotation settings in force (they follow the
	// policy); nil means the defaults, compressed.
	Rotation func() Rotation
	// CheckpointEvery is the most records between checkpoints (100).
	CheckpointEvery int
	// CheckpointAfter is the longest time new records wait for a
	// checkpoint (5 minutes).
	CheckpointAfter time.Duration
	Log             *zap.Logger
	Now             func() time.Time

	noSync bool // benchmarks: the cost of the durability step
}

// Log appends chained records to a file. A nil *Log discards them.
type Log struct {
	o Options

	mu     sync.Mutex
	f      *os.File
	size   int64
	seq    int64
	hash   string
	since  int // records since the last checkpoint
	signer jose.Signer
	brk    string // the chain break found at start, for status
	warn   string // the head could not be read at start
	closed bool
	stop   chan struct{}
	done   chan struct{}

	// The head moves in the keychain from its own goroutine, always to
	// a record already synced: a slow or frozen keychain never holds up
	// a write, and a crash leaves the head behind the file, never ahead.
	headMu   sync.Mutex
	pending  audit.Head
	headKick chan struct{}
	headDone chan struct{}
	headErr  error
}

// Open opens the log at path without a head store (tests, tools).
func Open(path string) (*Log, error) {
	return OpenLog(context.Background(), Options{Path: path})
}

// OpenLog opens (creating with 0600, and its directory with 0700) the
// log, checks it against the head in the store, and continues it, or
// records a chain break and starts a new file (docs/audit.md).
func OpenLog(ctx context.Context, o Options) (*Log, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.CheckpointAfter <= 0 {
		o.CheckpointAfter = DefaultCheckpointAfter
	}
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
		return nil, err
	}
	l := &Log{o: o, stop: make(chan struct{}), done: make(chan struct{}),
		headKick: make(chan struct{}, 1), headDone: make(chan struct{})}
	if err := l.start(ctx); err != nil {
		return nil, err
	}
	l.finishCompression()
	go l.timer()
	go l.headWriter()
	return l, nil
}

// errBreak describes why the log does not continue from the head.
type errBreak struct{ reason string }

func (e errBreak) Error() string { return e.reason }

// start finds where the log ends, compares it with the head and opens
// the file for appending.
func (l *Log) start(ctx context.Context) error {
	head, haveHead, err := l.readHead(ctx)
	if err == nil && !haveHead {
		if av, ok := l.o.Store.(keychain.Availability); ok && !av.Available() {
			err = errors.New("the keychain is not available")
		}
	}
	if err != nil {
		l.warn = "the audit log's head could not be read from the keychain (" + err.Error() + "): the log was continued without checking that it reaches the head"
		l.o.Log.Warn(l.warn)
	}
	lines, err := audit.ReadLines(l.o.Path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit log %s: %w", l.o.Path, err)
	}
	// A torn last line is a write a crash interrupted: it was never
	// synced, the head never moved past it.
	var torn *audit.Line
	if n := len(lines); n > 0 && lines[n-1].Torn {
		torn = &lines[n-1]
		lines = lines[:n-1]
	}
	if len(lines) > 0 && lines[0].Rec == nil && lines[0].Err != nil && !haveHead && isLegacy(lines) {
		// A log written before the chain existed: keep it beside.
		aside := l.aside("legacy")
		if err := os.Rename(l.o.Path, aside); err != nil {
			return err
		}
		l.o.Log.Info("the audit log predates the chain; kept it beside and started a chained one", zap.String("kept", aside))
		lines, torn = nil, nil
	}
	last, firstSeq, cerr := chainOf(lines)
	if cerr == nil {
		// The current file goes on from the newest rotated one (or
		// begins the log), unless it begins after a chain break.
		var before audit.Head
		if before, cerr = l.lastRotated(); cerr == nil {
			switch {
			case len(lines) == 0:
				last, firstSeq = before, before.Seq+1
			case lines[0].Rec.Event == audit.EventChainBreak:
			case lines[0].Rec.Seq != before.Seq+1 || lines[0].Rec.Prev != before.Hash:
				cerr = errBreak{fmt.Sprintf("the first record, seq %d, does not chain from seq %d before it", firstSeq, before.Seq)}
			}
		}
	}
	if cerr == nil && haveHead {
		cerr = l.reaches(lines, firstSeq, last, head)
	}
	if cerr != nil {
		return l.startBroken(cerr, head, haveHead, last)
	}
	if torn != nil {
		l.o.Log.Warn("the audit log ends in a record a crash cut short; dropping it", zap.Int("line", torn.N))
		if err := truncateTo(l.o.Path, sizeOf(lines)); err != nil {
			return err
		}
	}
	if err := l.openFile(); err != nil {
		return err
	}
	l.seq, l.hash = last.Seq, last.Hash
	if last.Seq > head.Seq || !haveHead {
		l.putHead(ctx, last) // adopt records a crash left after the head
	}
	l.pending = last
	return nil
}

// isLegacy reports a file of records without seq (the seed's format).
func isLegacy(lines []audit.Line) bool {
	var c map[string]any
	return json.Unmarshal(lines[0].Raw, &c) == nil && c["seq"] == nil && c["event"] != nil
}

// chainOf checks that lines chain among themselves and returns the last.
func chainOf(lines []audit.Line) (last audit.Head, first int64, err error) {
	for i, l := range lines {
		if l.Rec == nil {
			return last, first, errBreak{fmt.Sprintf("line %d: %v", l.N, l.Err)}
		}
		if i == 0 {
			first = l.Rec.Seq
		} else if l.Rec.Seq != last.Seq+1 || l.Rec.Prev != last.Hash {
			return last, first, errBreak{fmt.Sprintf("line %d (seq %d) does not chain from seq %d", l.N, l.Rec.Seq, last.Seq)}
		}
		last = audit.Head{Seq: l.Rec.Seq, Hash: audit.LineHash(l.Raw)}
	}
	if len(lines) == 0 {
		last.Hash = audit.Zero
	}
	return last, first, nil
}

// reaches checks that the log holds the head's record, or chains on
// right after it.
func (l *Log) reaches(lines []audit.Line, firstSeq int64, last, head audit.Head) error {
	if last == head {
		return nil
	}
	if last.Seq < head.Seq {
		return errBreak{fmt.Sprintf("the log ends at seq %d, before the head seq %d (a cut tail or an older copy)", last.Seq, head.Seq)}
	}
	if len(lines) > 0 && firstSeq == head.Seq+1 {
		if lines[0].Rec.Prev != head.Hash {
			return errBreak{fmt.Sprintf("seq %d does not chain from the head seq %d", firstSeq, head.Seq)}
		}
		return nil
	}
	if len(lines) > 0 && firstSeq <= head.Seq {
		l := lines[head.Seq-firstSeq]
		if audit.LineHash(l.Raw) != head.Hash {
			return errBreak{fmt.Sprintf("record %d is not the one the head names", head.Seq)}
		}
		return nil
	}
	// The head is in a rotated file.
	files, err := audit.SetFiles(l.o.Path)
	if err != nil {
		return err
	}
	for i := len(files) - 1; i >= 0; i-- {
		if files[i] == l.o.Path {
			continue
		}
		ls, err := audit.ReadLines(files[i])
		if err != nil || len(ls) == 0 || ls[0].Rec == nil {
			continue
		}
		if f := ls[0].Rec.Seq; f <= head.Seq && head.Seq-f < int64(len(ls)) {
			if audit.LineHash(ls[head.Seq-f].Raw) == head.Hash {
				return nil
			}
			break
		}
	}
	return errBreak{fmt.Sprintf("no record of the log is the head seq %d", head.Seq)}
}

// lastRotated is the last record of the newest rotated file.
func (l *Log) lastRotated() (audit.Head, error) {
	files, err := audit.SetFiles(l.o.Path)
	if err != nil {
		return audit.Head{}, err
	}
	for i := len(files) - 1; i >= 0; i-- {
		if files[i] == l.o.Path {
			continue
		}
		ls, err := audit.ReadLines(files[i])
		if err != nil {
			return audit.Head{}, errBreak{fmt.Sprintf("%s: %v", filepath.Base(files[i]), err)}
		}
		last, _, err := chainOf(ls)
		if err != nil {
			return audit.Head{}, errBreak{fmt.Sprintf("%s: %v", filepath.Base(files[i]), err)}
		}
		return last, nil
	}
	return audit.Head{Hash: audit.Zero}, nil
}

// startBroken sets the file aside and starts a new one with chain_break.
func (l *Log) startBroken(cause error, head audit.Head, haveHead bool, last audit.Head) error {
	var eb errBreak
	if !errors.As(cause, &eb) {
		return fmt.Errorf("audit log %s: %w", l.o.Path, cause)
	}
	from := head // DESIGN.md: the new file goes on from the head
	if !haveHead {
		from = last // no head: from the last record that chains
	}
	aside := ""
	if _, err := os.Stat(l.o.Path); err == nil {
		aside = l.aside("break")
		if err := os.Rename(l.o.Path, aside); err != nil {
			return err
		}
	}
	l.brk = fmt.Sprintf("audit log chain break: %s; the file is kept as %s, a new one starts at seq %d", eb.reason, filepath.Base(aside), from.Seq+1)
	l.o.Log.Error(l.brk, zap.String("path", l.o.Path))
	if err := l.openFile(); err != nil {
		return err
	}
	l.seq, l.hash = from.Seq, from.Hash
	return l.write(audit.Record{Event: audit.EventChainBreak, Result: "broken", Detail: eb.reason,
		File: filepath.Base(aside), Head: fmt.Sprintf("%d:%s", head.Seq, head.Hash), UID: os.Getuid()})
}

// aside is the name a file set aside gets: audit.break-20261202T043000Z.jsonl.
func (l *Log) aside(why string) string {
	dir, base := filepath.Split(l.o.Path)
	ext := filepath.Ext(base)
	stamp := l.o.Now().UTC().Format("20060102T150405.000000000Z")
	return filepath.Join(dir, fmt.Sprintf("%s.%s-%s%s", strings.TrimSuffix(base, ext), why, stamp, ext))
}

func sizeOf(lines []audit.Line) int64 {
	var n int64
	for _, l := range lines {
		n += int64(len(l.Raw)) + 1
	}
	return n
}

func truncateTo(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

func (l *Log) openFile() error {
	f, err := os.OpenFile(l.o.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, st.Size()
	return syncDir(l.o.Path)
}

func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (l *Log) readHead(ctx context.Context) (audit.Head, bool, error) {
	if l.o.Store == nil {
		return audit.Head{}, false, nil
	}
	b, err := l.o.Store.Get(ctx, KindAudit, headName)
	if errors.Is(err, keychain.ErrNotFound) {
		return audit.Head{}, false, nil
	}
	if err != nil {
		return audit.Head{}, false, err
	}
	var h audit.Head
	if json.Unmarshal(b, &h) != nil || len(h.Hash) != 64 {
		return audit.Head{}, false, fmt.Errorf("the stored head is malformed")
	}
	return h, true, nil
}

// putHead moves the head in the keychain to h, a record on disk.
func (l *Log) putHead(ctx context.Context, h audit.Head) {
	if l.o.Store == nil || h.Seq == 0 {
		return
	}
	b, _ := json.Marshal(h)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := l.o.Store.Put(ctx, KindAudit, headName, b)
	if err != nil && l.headErr == nil {
		l.o.Log.Warn("cannot move the audit log's head in the keychain; a restart adopts the records after it", zap.Error(err))
	}
	l.headErr = err
}

// SetKey gives the log the token-signing key for checkpoints (kid as in
// jwks). Until it is set no checkpoint is written.
func (l *Log) SetKey(priv ed25519.PrivateKey, kid string) error {
	if l == nil {
		return nil
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv},
		(&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.signer = s
	if l.since >= l.o.CheckpointEvery-1 && !l.closed {
		return l.checkpoint()
	}
	return nil
}

// Write appends r (stamping its time, seq and prev), syncs it to disk,
// then moves the head.
func (l *Log) Write(r audit.Record) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("the audit log is closed")
	}
	if r.Event == audit.EventCheckpoint || r.Event == audit.EventChainBreak {
		return fmt.Errorf("event %q is the log's own", r.Event)
	}
	r.JWS, r.File, r.Head = "", "", ""
	if err := l.write(r); err != nil {
		return err
	}
	if l.signer != nil && l.since >= l.o.CheckpointEvery-1 {
		if err := l.checkpoint(); err != nil {
			return err
		}
	}
	return l.maybeRotate()
}

// write appends one record; l.mu is held.
func (l *Log) write(r audit.Record) error {
	r.Seq, r.Prev = l.seq+1, l.hash
	if r.Time.IsZero() {
		r.Time = l.o.Now().UTC()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		_ = l.f.Truncate(l.size) // leave no torn line to append after
		return err
	}
	if !l.o.noSync {
		if err := l.f.Sync(); err != nil {
			return err
		}
	}
	l.size += int64(len(b)) + 1
	l.seq, l.hash = r.Seq, audit.LineHash(b)
	if r.Event == audit.EventCheckpoint {
		l.since = 0
	} else {
		l.since++
	}
	l.headMu.Lock()
	l.pending = audit.Head{Seq: l.seq, Hash: l.hash}
	l.headMu.Unlock()
	select {
	case l.headKick <- struct{}{}:
	default:
	}
	return nil
}

// headWriter moves the head to the newest record synced, until Close.
func (l *Log) headWriter() {
	defer close(l.headDone)
	var written audit.Head
	for {
		_, more := <-l.headKick
		l.headMu.Lock()
		h := l.pending
		l.headMu.Unlock()
		if h != written && h.Seq > 0 {
			l.putHead(context.Background(), h)
			written = h
		}
		if !more {
			return
		}
	}
}

// checkpoint appends a signed checkpoint; l.mu is held.
func (l *Log) checkpoint() error {
	// The payload is the checkpoint record's own seq and prev.
	payload, _ := json.Marshal(struct {
		Seq  int64  `json:"seq"`
		Prev string `json:"prev"`
	}{l.seq + 1, l.hash})
	sig, err := l.signer.Sign(payload)
	if err != nil {
		return err
	}
	jws, err := sig.CompactSerialize()
	if err != nil {
		return err
	}
	return l.write(audit.Record{Event: audit.EventCheckpoint, JWS: jws, UID: os.Getuid()})
}

// Checkpoint appends a checkpoint if records came since the last one.
func (l *Log) Checkpoint() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.signer == nil || l.since == 0 {
		return nil
	}
	return l.checkpoint()
}

func (l *Log) timer() {
	defer close(l.done)
	t := time.NewTicker(l.o.CheckpointAfter)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.Checkpoint(); err != nil {
				l.o.Log.Warn("cannot write an audit checkpoint", zap.Error(err))
			}
		}
	}
}

func (l *Log) rotation() Rotation {
	r := Rotation{Compress: true}
	if l.o.Rotation != nil {
		r = l.o.Rotation()
	}
	if r.MaxSize <= 0 {
		r.MaxSize = DefaultMaxSize
	}
	return r
}

// maybeRotate starts a new file when this one is over the size; l.mu is
// held. The new file continues seq and prev.
func (l *Log) maybeRotate() error {
	rot := l.rotation()
	if l.size < rot.MaxSize {
		return nil
	}
	if l.signer != nil && l.since > 0 {
		if err := l.checkpoint(); err != nil {
			return err
		}
	}
	first, err := audit.FirstSeq(l.o.Path)
	if err != nil {
		return err
	}
	name := audit.RotatedName(l.o.Path, first)
	l.f.Close()
	if err := os.Rename(l.o.Path, name); err != nil {
		return err
	}
	if err := l.openFile(); err != nil {
		return err
	}
	if rot.Compress {
		if err := compress(name); err != nil {
			l.o.Log.Warn("cannot compress a rotated audit file; it stays uncompressed", zap.String("file", name), zap.Error(err))
		}
	}
	if rot.Keep > 0 {
		files, _ := audit.SetFiles(l.o.Path)
		old := files[:len(files)-1]
		for len(old) > rot.Keep {
			os.Remove(old[0])
			old = old[1:]
		}
	}
	return nil
}

// finishCompression compresses the rotated files a crash left
// uncompressed (a kill between the rename and the end of compress), and
// removes the half-written .gz.tmp such a crash leaves, so that the set
// looks as if no crash had happened.
func (l *Log) finishCompression() {
	dir := filepath.Dir(l.o.Path)
	if tmps, _ := filepath.Glob(filepath.Join(dir, rotatedGlob(l.o.Path)+".gz.tmp")); len(tmps) > 0 {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	if !l.rotation().Compress {
		return
	}
	files, _ := audit.SetFiles(l.o.Path)
	for _, name := range files {
		if name == l.o.Path || strings.HasSuffix(name, ".gz") {
			continue
		}
		if err := compress(name); err != nil {
			l.o.Log.Warn("cannot compress a rotated audit file; it stays uncompressed", zap.String("file", name), zap.Error(err))
		}
	}
}

// rotatedGlob matches the names of path's rotated files (rotatedName).
func rotatedGlob(path string) string {
	base := filepath.Base(path)
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext) + "-" + strings.Repeat("[0-9]", 12) + ext
}

// compress replaces name by name.gz, on disk before the original goes.
func compress(name string) error {
	in, err := os.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := name + ".gz.tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	z := gzip.NewWriter(out)
	_, err = io.Copy(z, in)
	if err == nil {
		err = z.Close()
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name+".gz")
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := syncDir(name); err != nil {
		return err
	}
	return os.Remove(name)
}

// Head returns the last record written.
func (l *Log) Head() audit.Head {
	if l == nil {
		return audit.Head{Hash: audit.Zero}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return audit.Head{Seq: l.seq, Hash: l.hash}
}

// Path is the file the log appends to.
func (l *Log) Path() string {
	if l == nil {
		return ""
	}
	return l.o.Path
}

// Break describes the chain break found at start, or "".
func (l *Log) Break() string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.brk
}

// Warning says when the log could not be checked against its head at
// start (the keychain did not answer), or "".
func (l *Log) Warning() string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warn
}

// Close writes a checkpoint (when records came since the last one and a
// key is set) and closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	var err error
	if l.signer != nil && l.since > 0 {
		err = l.checkpoint()
	}
	l.closed = true
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	close(l.headKick) // the writer stores the last head, then ends
	<-l.headDone
	return err
}

func jsonHead(h audit.Head) ([]byte, error) { return json.Marshal(h) }
