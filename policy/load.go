package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Load reads the policy at path. A missing file gives the built-in
// defaults and exists=false. Errors start with the path:
//
//	/home/me/.config/stepup/policy.yaml: line 7: scopes."deploy:prod".ttl: ...
//
// Load refuses a file that is not a regular file, is larger than
// MaxFileSize, or that another user could have written (owned by someone
// other than this user or root, or writable by everyone): such a file
// could weaken step-up behind the user's back.
func Load(path string) (p *Policy, exists bool, err error) {
	data, exists, err := ReadFile(path)
	if err != nil {
		return nil, exists, fmt.Errorf("%s: %w", path, err)
	}
	if !exists {
		return Default(), false, nil
	}
	p, err = Parse(data)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", path, err)
	}
	return p, true, nil
}

// ErrEmptyReload: on reload, an empty policy file is taken for a write
// still under way (an editor or a script that truncates, then writes), not
// for a wish to go back to the built-in defaults, which could loosen what
// is in force.
var ErrEmptyReload = errors.New("the policy file is empty (a write still under way?), so the last good policy stays in force; write the keys you want, or remove the file to go back to the built-in defaults")

// Reload is Load for a file that changed while the agent runs: the same,
// except that an empty file is an error (ErrEmptyReload).
func Reload(path string) (p *Policy, exists bool, err error) {
	data, exists, err := ReadFile(path)
	if err == nil && exists && len(bytes.TrimSpace(data)) == 0 {
		return nil, true, fmt.Errorf("%s: %w", path, ErrEmptyReload)
	}
	return Load(path)
}

// ReadFile reads the file at path with the checks Load documents.
func ReadFile(path string) (data []byte, exists bool, err error) {
	// O_NONBLOCK: opening a FIFO planted at path must not hang the agent.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, true, err
	}
	if !fi.Mode().IsRegular() {
		return nil, true, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if err := checkOwner(fi); err != nil {
		return nil, true, err
	}
	if err := checkDirs(path); err != nil {
		return nil, true, err
	}
	if fi.Size() > MaxFileSize {
		return nil, true, fmt.Errorf("the file is %d bytes; a policy file may be at most %d", fi.Size(), MaxFileSize)
	}
	data, err = io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, true, err
	}
	if len(data) > MaxFileSize {
		return nil, true, fmt.Errorf("the file is larger than %d bytes", MaxFileSize)
	}
	return data, true, nil
}
