package reload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/stepup-agent/stepup-agent/policy"
)

// Timings of Watch.
const (
	// debounce is how long Watch waits after the last event in the
	// directory before it reloads: an editor's save is several events.
	debounce = 100 * time.Millisecond
	// maxDebounce bounds the wait when events never stop coming.
	maxDebounce = time.Second
	// pollEvery is the fallback check interval while the policy's own
	// directory cannot be watched (it does not exist yet, or inotify
	// refused it).
	pollEvery = 2 * time.Second
)

// Watch reloads the policy file at path when it changes and calls
// onChange with the result of Load: the new policy and exists, or the
// error (the caller keeps its last good policy; a broken file is reported,
// never applied). It returns nil when ctx is done, or an error if no
// watcher can be made at all (then SIGHUP is the only way to reload).
//
// Watch watches the file's directory, not the file, so that every way of
// replacing a file is seen: in-place writes, editors' atomic renames
// (write a temporary file, rename it over), `mv new policy.yaml`, symlink
// swaps (Kubernetes' ..data), creation and removal. When the path is a
// symlink, the directory of its target is watched too. When the
// directory does not exist yet, Watch watches its nearest existing
// ancestor and moves down as the directories appear (and back up if they
// are removed); it also polls every 2s while the directory itself is not
// watched.
//
// Events are debounced (100ms after the last one, at most 1s), and
// onChange is called only when what Load sees has changed (the file's
// bytes, its existence, or the read error), so unrelated files in the
// same directory cost a read but cause no call. Watch does not call
// onChange for the state it finds at start: call Load before Watch.
// onChange runs on Watch's goroutine; Watch never calls it after it
// returns.
func Watch(ctx context.Context, path string, log *zap.Logger, onChange func(p *policy.Policy, exists bool, err error)) error {
	if log == nil {
		log = zap.NewNop()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("policy: watching %s: %w", path, err)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy: watching %s: %w", path, err)
	}
	defer fw.Close()
	w := &watcher{fw: fw, path: abs, name: path, log: log, watched: map[string]os.FileInfo{}}
	w.arm()
	last := w.snapshot()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var poll <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	setPolling := func() {
		switch {
		case w.direct && ticker != nil:
			ticker.Stop()
			ticker, poll = nil, nil
		case !w.direct && ticker == nil:
			ticker = time.NewTicker(pollEvery)
			poll = ticker.C
		}
	}
	setPolling()

	var first time.Time // of the pending batch; zero: none pending
	schedule := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		wait := debounce
		if rest := maxDebounce - now.Sub(first); rest < wait {
			wait = max(rest, 0)
		}
		timer.Reset(wait)
	}
	check := func() {
		first = time.Time{}
		w.arm()
		setPolling()
		s := w.snapshot()
		if s.equal(last) {
			return
		}
		last = s
		// The caller logs the outcome (it knows what it kept).
		log.Debug("policy file changed", zap.String("path", path), zap.Bool("exists", s.exists), zap.Bool("valid", s.err == nil))
		onChange(s.policy, s.exists, s.err)
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			log.Debug("policy directory event", zap.String("name", ev.Name), zap.Stringer("op", ev.Op))
			schedule()
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			log.Warn("watching the policy file", zap.String("path", path), zap.Error(err))
			schedule()
		case <-poll:
			check()
		case <-timer.C:
			check()
		}
	}
}

// watcher keeps the set of watched directories in step with the file
// system.
type watcher struct {
	fw      *fsnotify.Watcher
	path    string // absolute
	name    string // as given, for errors
	log     *zap.Logger
	watched map[string]os.FileInfo
	direct  bool // the file's own directory is watched
}

// wanted returns the directories to watch: the file's directory or its
// nearest existing ancestor, and the directory of the symlink's target.
func (w *watcher) wanted() map[string]os.FileInfo {
	want := map[string]os.FileInfo{}
	dir := filepath.Dir(w.path)
	for d := dir; ; {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			want[d] = fi
			break
		}
		up := filepath.Dir(d)
		if up == d {
			break
		}
		d = up
	}
	if target, err := filepath.EvalSymlinks(w.path); err == nil {
		if td := filepath.Dir(target); td != dir {
			if fi, err := os.Stat(td); err == nil && fi.IsDir() {
				want[td] = fi
			}
		}
	}
	return want
}

// arm adds and removes watches until they match wanted. It repeats while
// the wanted set changes under it, so a directory created between the
// look and the watch is not missed.
func (w *watcher) arm() {
	for range 10 {
		want := w.wanted()
		for d, fi := range w.watched {
			if nfi, ok := want[d]; !ok || !os.SameFile(fi, nfi) {
				// Gone, or replaced by another directory of that name:
				// the old watch (if the kernel kept it) sees nothing.
				_ = w.fw.Remove(d)
				delete(w.watched, d)
			}
		}
		changed := false
		for d, fi := range want {
			if _, ok := w.watched[d]; ok {
				continue
			}
			if err := w.fw.Add(d); err != nil {
				w.log.Warn("cannot watch the policy directory; polling instead", zap.String("dir", d), zap.Error(err))
				continue
			}
			w.watched[d] = fi
			changed = true
		}
		_, w.direct = w.watched[filepath.Dir(w.path)]
		if !changed {
			return
		}
		// Look again: something may have appeared before the watch did.
		again := w.wanted()
		same := len(again) == len(want)
		for d, fi := range again {
			if ofi, ok := want[d]; !ok || !os.SameFile(fi, ofi) {
				same = false
			}
		}
		if same {
			return
		}
	}
}

// state is what Load sees.
type state struct {
	exists bool
	sum    [sha256.Size]byte
	err    error
	policy *policy.Policy
}

func (s state) equal(o state) bool {
	if s.exists != o.exists || s.sum != o.sum || (s.err == nil) != (o.err == nil) {
		return false
	}
	return s.err == nil || s.err.Error() == o.err.Error()
}

func (w *watcher) snapshot() state {
	data, exists, err := policy.ReadFile(w.path)
	s := state{exists: exists}
	if err != nil {
		s.err = fmt.Errorf("%s: %w", w.name, err)
		return s
	}
	if !exists {
		s.policy = policy.Default()
		return s
	}
	s.sum = sha256.Sum256(data)
	if len(bytes.TrimSpace(data)) == 0 {
		s.err = fmt.Errorf("%s: %w", w.name, policy.ErrEmptyReload)
		return s
	}
	s.policy, err = policy.Parse(data)
	if err != nil {
		s.err = fmt.Errorf("%s: %w", w.name, err)
		s.policy = nil
	}
	return s
}
