package keychain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
	items items
	stamp fileStamp // of the file as last read or written; zero: none
}

// fileStamp tells whether the file changed: inode, size, mtime.
type fileStamp struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type fileContent struct {
	Version int   `json:"version"`
	Items   items `json:"items"`
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
	f := &File{dir: dir, path: filepath.Join(dir, FileName), items: items{}}
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
		f.items, f.stamp = items{}, fileStamp{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("keychain file: %w", err)
	}
	if f.stamp != (fileStamp{}) && stampOf(fi) == f.stamp {
		return nil
	}
	data, st, err := readPrivate(f.path)
	if err != nil {
		return err
	}
	var c fileContent
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("keychain file %s is not valid: %w (fix it, or move it away to start afresh)", f.path, err)
	}
	if c.Version != 1 {
		return fmt.Errorf("keychain file %s has version %d; this agent reads version 1", f.path, c.Version)
	}
	f.items = items{}
	for k, m := range c.Items {
		if len(m) > 0 {
			f.items[k] = m
		}
	}
	f.stamp = st
	return nil
}

func stampOf(fi fs.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(s.Dev), uint64(s.Ino)
	}
	return st
}

// readPrivate reads the file at path after checking it as
// checkOwnedPrivate does. It checks the descriptor it reads, not the path
// again, and opens without following a symbolic link and without waiting
// for a writer (a FIFO there would otherwise block the agent's start).
func readPrivate(path string) ([]byte, fileStamp, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fileStamp{}, fmt.Errorf("keychain file: %s is a symbolic link, not a regular file", path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fileStamp{}, err
		}
		return nil, fileStamp{}, fmt.Errorf("keychain file: %w", err)
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("keychain file: %w", err)
	}
	if err := checkInfo(path, fi, false); err != nil {
		return nil, fileStamp{}, err
	}
	data, err := io.ReadAll(fd)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("keychain file: %w", err)
	}
	return data, stampOf(fi), nil
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
	return f.items.get(kind, name)
}

func (f *File) Put(_ context.Context, kind, name string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(kind, name, func() ([]byte, bool) { return f.items.put(kind, name, data) })
}

func (f *File) Delete(_ context.Context, kind, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.change(kind, name, func() ([]byte, bool) { return f.items.del(kind, name) })
}

// change applies one edit to the file as it is on disk now and saves it;
// a failed save undoes the edit in memory. Callers hold f.mu.
func (f *File) change(kind, name string, edit func() (old []byte, had bool)) error {
	if err := f.refresh(); err != nil {
		// Never overwrite a file we cannot read (half edited by hand):
		// the caller keeps the change and writes it again later.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	old, had := edit()
	if err := f.save(); err != nil {
		f.items.undo(kind, name, old, had)
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
	return f.items.list(kind), nil
}

// save writes the items atomically. Callers hold f.mu.
func (f *File) save() error {
	data, err := json.Marshal(fileContent{Version: 1, Items: f.items})
	if err != nil {
		return fmt.Errorf("keychain file: %w", err)
	}
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
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	fi, err := os.Stat(tmp.Name())
	if err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	ok = true
	f.stamp = stampOf(fi)
	if d, err := os.Open(f.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
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
	return err
}

// Warning says the items are in a plain file.
func (f *File) Warning() string {
	return "keychain file: the signing key, credentials and tokens are kept in a plain file on disk, " +
		f.path + " (mode 0600, not encrypted), protected only by file permissions"
}
