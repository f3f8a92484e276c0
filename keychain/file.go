package keychain

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// FileName is the file the file backend keeps in its directory.
const FileName = "keychain.json"

// File is a Store for headless servers with no Secret Service: every item
// in one JSON file, mode 0600, in a directory of mode 0700, like an ssh key
// on disk, not encrypted. Each change rewrites it atomically (temporary
// file in the same directory, fsync, rename, fsync of the directory), so a
// crash leaves the old or the new file, never half of one. Before every
// call it checks whether the file changed on disk since it last read or
// wrote it (a person removing an item with jq, say) and reads it again,
// so a change is applied to what is on disk and no edit made while the
// agent runs is lost. One agent at a time: Open takes an exclusive lock
// (flock) on keychain.json.lock for the store's life and a second agent
// on the same directory gets an error naming the first. It refuses a
// directory or file that another user owns or that others can write (and
// a file others can read).
type File struct {
	dir, path string
	lock      *os.File

	mu    sync.Mutex
	items fileItems
	cur   *os.File  // the file as last read or written, where items' values are
	stamp fileStamp // of cur; zero: none
}

// fileItems are (kind, name) -> value. A value read from or written to
// the file is held as its place in the file (cur), not as its bytes:
// with 10,000 tokens that is ~1 MB instead of ~11 MB (docs/keychain.md).
type fileItems map[string]map[string]fileValue

// fileValue is one item's value: its base64 text at off (n bytes) in
// cur, or, when n < 0, data in memory (a value not yet saved, or null).
type fileValue struct {
	data []byte
	off  int64
	n    int
}

func inMemory(data []byte) fileValue { return fileValue{data: data, n: -1} }

// fileStamp tells whether the file changed: inode, size, mtime.
type fileStamp struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// LockName is the lock file beside FileName.
const LockName = FileName + ".lock"

// OpenFile opens (creating it if needed) the file backend in dir.
func OpenFile(dir string) (*File, error) {
	if dir == "" {
		return nil, errors.New("keychain file: no state directory: set XDG_STATE_HOME or HOME")
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keychain file: %w", err)
	}
	if err := checkOwnedPrivate(dir, true); err != nil {
		return nil, err
	}
	f := &File{dir: dir, path: filepath.Join(dir, FileName), items: fileItems{}}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	f.lock = lock
	if err := f.refresh(); err != nil {
		lock.Close()
		return nil, err
	}
	return f, nil
}

// lockDir takes the store's exclusive lock, writing this process's pid
// in the lock file so that a second agent can say whose it is.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockName)
	lf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keychain file: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := io.ReadAll(io.LimitReader(lf, 32))
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another stepup-agent"
			if p := strings.TrimSpace(string(pid)); p != "" {
				who += " (pid " + p + ")"
			}
			return nil, fmt.Errorf("keychain file %s is in use by %s: two agents must not share one store; "+
				"stop that agent, or give this one its own state directory (XDG_STATE_HOME) or another --keychain", filepath.Join(dir, FileName), who)
		}
		return nil, fmt.Errorf("keychain file: cannot lock %s: %w", path, err)
	}
	lf.Truncate(0)
	lf.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return lf, nil
}

// refresh reads the file again when it changed on disk since f.stamp.
// Callers hold f.mu (or own f alone).
func (f *File) refresh() error {
	fi, err := os.Lstat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		f.setCurrent(nil, fileItems{}, fileStamp{})
		return nil
	}
	if err != nil {
		return fmt.Errorf("keychain file: %w", err)
	}
	if f.stamp != (fileStamp{}) && stampOf(fi) == f.stamp {
		return nil
	}
	fd, data, st, err := readPrivate(f.path)
	if err != nil {
		return err
	}
	it, version, err := parseFile(data)
	if err != nil {
		fd.Close()
		return fmt.Errorf("keychain file %s is not valid: %w (fix it, or move it away to start afresh)", f.path, err)
	}
	if version != 1 {
		fd.Close()
		return fmt.Errorf("keychain file %s has version %d; this agent reads version 1", f.path, version)
	}
	f.setCurrent(fd, it, st)
	return nil
}

// setCurrent makes fd (nil: no file) the file items' values are in.
func (f *File) setCurrent(fd *os.File, it fileItems, st fileStamp) {
	if f.cur != nil {
		f.cur.Close()
	}
	f.cur, f.items, f.stamp = fd, it, st
}

// parseFile reads the file's JSON ({"version": 1, "items": {kind: {name:
// base64}}}, as encoding/json reads it into a map of []byte) and notes
// where each value's base64 text is rather than keeping its bytes. A
// value written with JSON escapes (by hand) is held decoded, in memory.
func parseFile(data []byte) (fileItems, int, error) {
	it := fileItems{}
	version := 0
	dec := json.NewDecoder(bytes.NewReader(data))
	var scratch []byte
	delim := func(want json.Delim) (bool, error) {
		t, err := dec.Token()
		if err != nil {
			return false, err
		}
		if t == nil {
			return false, nil
		}
		if d, ok := t.(json.Delim); !ok || d != want {
			return false, fmt.Errorf("want %v, found %v", want, t)
		}
		return true, nil
	}
	key := func() (string, error) {
		t, err := dec.Token()
		if err != nil {
			return "", err
		}
		k, ok := t.(string)
		if !ok {
			return "", fmt.Errorf("want a key, found %v", t)
		}
		return k, nil
	}
	if ok, err := delim('{'); err != nil || !ok {
		if err == nil {
			err = errors.New("want an object, found null")
		}
		return nil, 0, err
	}
	for dec.More() {
		k, err := key()
		if err != nil {
			return nil, 0, err
		}
		switch k {
		case "version":
			if err := dec.Decode(&version); err != nil {
				return nil, 0, err
			}
		case "items":
			ok, err := delim('{')
			if err != nil {
				return nil, 0, err
			}
			it = fileItems{}
			for ok && dec.More() {
				kind, err := key()
				if err != nil {
					return nil, 0, err
				}
				has, err := delim('{')
				if err != nil {
					return nil, 0, err
				}
				m := it[kind]
				for has && dec.More() {
					name, err := key()
					if err != nil {
						return nil, 0, err
					}
					t, err := dec.Token()
					if err != nil {
						return nil, 0, err
					}
					if m == nil {
						m = map[string]fileValue{}
						it[kind] = m
					}
					if t == nil {
						m[name] = inMemory(nil)
						continue
					}
					b64, ok := t.(string)
					if !ok {
						return nil, 0, fmt.Errorf("item %s/%s: want a base64 string, found %v", kind, name, t)
					}
					if cap(scratch) < base64.StdEncoding.DecodedLen(len(b64)) {
						scratch = make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
					}
					n, err := base64.StdEncoding.Decode(scratch[:cap(scratch)], []byte(b64))
					if err != nil {
						return nil, 0, fmt.Errorf("item %s/%s: %w", kind, name, err)
					}
					end := dec.InputOffset()
					start := end - int64(len(b64)) - 1
					if start >= 1 && data[start-1] == '"' && string(data[start:end-1]) == b64 {
						m[name] = fileValue{off: start, n: len(b64)}
					} else {
						m[name] = inMemory(append([]byte{}, scratch[:n]...))
					}
				}
				if has {
					if _, err := delim('}'); err != nil {
						return nil, 0, err
					}
				}
				if len(m) == 0 {
					delete(it, kind)
				}
			}
			if ok {
				if _, err := delim('}'); err != nil {
					return nil, 0, err
				}
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, 0, err
			}
		}
	}
	if _, err := delim('}'); err != nil {
		return nil, 0, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, errors.New("data after the top-level object")
	}
	return it, version, nil
}

func stampOf(fi fs.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(s.Dev), uint64(s.Ino)
	}
	return st
}

// readPrivate reads the file at path after checking it as
// checkOwnedPrivate does, and returns it open. It checks the descriptor
// it reads, not the path again, and opens without following a symbolic
// link and without waiting for a writer (a FIFO there would otherwise
// block the agent's start).
func readPrivate(path string) (*os.File, []byte, fileStamp, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, nil, fileStamp{}, fmt.Errorf("keychain file: %s is a symbolic link, not a regular file", path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fileStamp{}, err
		}
		return nil, nil, fileStamp{}, fmt.Errorf("keychain file: %w", err)
	}
	fi, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, nil, fileStamp{}, fmt.Errorf("keychain file: %w", err)
	}
	if err := checkInfo(path, fi, false); err != nil {
		fd.Close()
		return nil, nil, fileStamp{}, err
	}
	data, err := io.ReadAll(fd)
	if err != nil {
		fd.Close()
		return nil, nil, fileStamp{}, fmt.Errorf("keychain file: %w", err)
	}
	return fd, data, stampOf(fi), nil
}

// checkOwnedPrivate refuses a path that is not ours, that others can
// write, or (a file) that others can read or that is not a regular file.
func checkOwnedPrivate(path string, isDir bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("keychain file: %w", err)
	}
	return checkInfo(path, fi, isDir)
}

func checkInfo(path string, fi fs.FileInfo, isDir bool) error {
	if isDir && !fi.IsDir() {
		return fmt.Errorf("keychain file: %s is not a directory", path)
	}
	if !isDir && !fi.Mode().IsRegular() {
		return fmt.Errorf("keychain file: %s is not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("keychain file: %s is owned by uid %d, not by this user (%d)", path, st.Uid, os.Geteuid())
	}
	perm := fi.Mode().Perm()
	if isDir && perm&0o022 != 0 {
		return fmt.Errorf("keychain file: directory %s can be written by others (mode %04o): chmod 700 it", path, perm)
	}
	if !isDir && perm&0o077 != 0 {
		return fmt.Errorf("keychain file: %s can be read or written by others (mode %04o): chmod 600 it", path, perm)
	}
	return nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

func (f *File) Get(_ context.Context, kind, name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refresh(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	v, ok := f.items[kind][name]
	if !ok {
		return nil, ErrNotFound
	}
	if v.n < 0 {
		return append([]byte(nil), v.data...), nil
	}
	b64 := make([]byte, v.n)
	if _, err := f.cur.ReadAt(b64, v.off); err != nil {
		return nil, fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(v.n))
	n, err := base64.StdEncoding.Decode(out, b64)
	if err != nil {
		return nil, fmt.Errorf("%w: keychain file %s changed under the agent: %w", ErrUnavailable, f.path, err)
	}
	return out[:n], nil
}

func (f *File) Put(_ context.Context, kind, name string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(kind, name, func() (fileValue, bool) {
		old, had := f.items[kind][name]
		if f.items[kind] == nil {
			f.items[kind] = map[string]fileValue{}
		}
		f.items[kind][name] = inMemory(append([]byte{}, data...))
		return old, had
	})
}

func (f *File) Delete(_ context.Context, kind, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(kind, name, func() (fileValue, bool) {
		old, had := f.items[kind][name]
		delete(f.items[kind], name)
		return old, had
	})
}

// change applies one edit to the file as it is on disk now and saves it;
// a failed save undoes the edit in memory. Callers hold f.mu.
func (f *File) change(kind, name string, edit func() (old fileValue, had bool)) error {
	if err := f.refresh(); err != nil {
		// Never overwrite a file we cannot read (half edited by hand):
		// the caller keeps the change and writes it again later.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	old, had := edit()
	if err := f.save(); err != nil {
		if had {
			f.items[kind][name] = old
		} else {
			delete(f.items[kind], name)
		}
		return err
	}
	return nil
}

func (f *File) List(_ context.Context, kind string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refresh(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	names := make([]string, 0, len(f.items[kind]))
	for n := range f.items[kind] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// save writes the items atomically, in the JSON encoding/json gives a
// map of []byte (keys sorted), copying each saved value's base64 text
// from the current file; then it holds the new file and where each value
// is in it. Callers hold f.mu.
func (f *File) save() error {
	// The directory may have been changed under us since Open.
	if err := checkOwnedPrivate(f.dir, true); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	tmp, err := os.CreateTemp(f.dir, ".keychain-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	placed, err := f.encode(tmp)
	if err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	ok = true
	f.setCurrent(tmp, placed, stampOf(fi))
	if d, err := os.Open(f.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// encode writes the items to w and returns them as placed in what it
// wrote.
func (f *File) encode(w io.Writer) (fileItems, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var off int64
	put := func(b []byte) {
		n, _ := bw.Write(b) // the error stays in bw, Flush returns it
		off += int64(n)
	}
	quote := func(s string) []byte {
		q, _ := json.Marshal(s)
		return q
	}
	placed := make(fileItems, len(f.items))
	put([]byte(`{"version":1,"items":{`))
	kinds := make([]string, 0, len(f.items))
	for k, m := range f.items {
		if len(m) > 0 {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	var buf []byte
	for i, k := range kinds {
		if i > 0 {
			put([]byte{','})
		}
		put(quote(k))
		put([]byte(":{"))
		m := f.items[k]
		pm := make(map[string]fileValue, len(m))
		placed[k] = pm
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for j, n := range names {
			if j > 0 {
				put([]byte{','})
			}
			put(quote(n))
			put([]byte{':'})
			v := m[n]
			switch {
			case v.n < 0 && v.data == nil:
				put([]byte("null"))
				pm[n] = v
				continue
			case v.n < 0:
				buf = base64.StdEncoding.AppendEncode(buf[:0], v.data)
			default:
				buf = slices.Grow(buf[:0], v.n)[:v.n]
				if _, err := f.cur.ReadAt(buf, v.off); err != nil {
					return nil, err
				}
			}
			put([]byte{'"'})
			pm[n] = fileValue{off: off, n: len(buf)}
			put(buf)
			put([]byte{'"'})
		}
		put([]byte{'}'})
	}
	put([]byte(`}}`))
	return placed, bw.Flush()
}

func (f *File) Backend() string { return "file" }

// Close releases the lock.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lock == nil {
		return nil
	}
	err := f.lock.Close()
	f.lock = nil
	f.setCurrent(nil, fileItems{}, fileStamp{})
	return err
}

// Warning says the items are in a plain file.
func (f *File) Warning() string {
	return "keychain file: the signing key, credentials and tokens are kept in a plain file on disk, " +
		f.path + " (mode 0600, not encrypted), protected only by file permissions"
}
