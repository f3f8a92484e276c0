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
	"sort"
	"sync"
	"syscall"
)

// FileName is the file the file backend keeps in its directory.
const FileName = "keychain.json"

// File is a Store for headless servers with no Secret Service: every item
// in one JSON file, mode 0600, in a directory of mode 0700, like an ssh key
// on disk. The file is read once when opened; each change rewrites it
// atomically (temporary file in the same directory, fsync, rename, fsync
// of the directory), so a crash leaves the old or the new file, never half
// of one. It refuses a directory or file that another user owns or that
// others can write (and a file others can read).
type File struct {
	dir, path string

	mu    sync.Mutex
	items map[string]map[string][]byte
}

type fileContent struct {
	Version int                          `json:"version"`
	Items   map[string]map[string][]byte `json:"items"`
}

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
	f := &File{dir: dir, path: filepath.Join(dir, FileName), items: map[string]map[string][]byte{}}
	data, err := readPrivate(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return f, nil
	case err != nil:
		return nil, err
	}
	var c fileContent
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("keychain file %s is not valid: %w (move it away to start afresh)", f.path, err)
	}
	if c.Version != 1 {
		return nil, fmt.Errorf("keychain file %s has version %d; this agent reads version 1", f.path, c.Version)
	}
	for k, m := range c.Items {
		if len(m) > 0 {
			f.items[k] = m
		}
	}
	return f, nil
}

// readPrivate reads the file at path after checking it as
// checkOwnedPrivate does. It checks the descriptor it reads, not the path
// again, and opens without following a symbolic link and without waiting
// for a writer (a FIFO there would otherwise block the agent's start).
func readPrivate(path string) ([]byte, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("keychain file: %s is a symbolic link, not a regular file", path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("keychain file: %w", err)
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("keychain file: %w", err)
	}
	if err := checkInfo(path, fi, false); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(fd)
	if err != nil {
		return nil, fmt.Errorf("keychain file: %w", err)
	}
	return data, nil
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
	d, ok := f.items[kind][name]
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), d...), nil
}

func (f *File) Put(_ context.Context, kind, name string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.items[kind][name]
	if f.items[kind] == nil {
		f.items[kind] = map[string][]byte{}
	}
	f.items[kind][name] = append([]byte{}, data...)
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

func (f *File) Delete(_ context.Context, kind, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.items[kind][name]
	if !had {
		return nil
	}
	delete(f.items[kind], name)
	if err := f.save(); err != nil {
		f.items[kind][name] = old
		return err
	}
	return nil
}

func (f *File) List(_ context.Context, kind string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.items[kind]))
	for n := range f.items[kind] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
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
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("%w: keychain file: %w", ErrUnavailable, err)
	}
	ok = true
	if d, err := os.Open(f.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (f *File) Backend() string { return "file" }
func (f *File) Close() error    { return nil }

// Warning says the items are in a plain file.
func (f *File) Warning() string {
	return "keychain file: the signing key, credentials and tokens are kept in a plain file on disk, " +
		f.path + " (mode 0600), protected only by file permissions"
}
