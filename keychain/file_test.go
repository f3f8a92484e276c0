package keychain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFileModesAndAtomicWrite(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "stepup")
	f, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Put(ctx, KindKey, "signing", []byte("seed")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode = %v, %v; want 0700", fi.Mode(), err)
	}
	fi, err = os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	// Only the file and its lock: no temporary file left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 || ents[0].Name() != FileName || ents[1].Name() != LockName {
		t.Fatalf("directory holds %v, want only %s and %s", ents, FileName, LockName)
	}
	// The format is plain JSON with base64 values.
	var c fileContent
	data, _ := os.ReadFile(f.Path())
	if err := json.Unmarshal(data, &c); err != nil || string(c.Items[KindKey]["signing"]) != "seed" || c.Version != 1 {
		t.Fatalf("file content %s: %v", data, err)
	}
	if w := f.Warning(); !strings.Contains(w, "plain file") || !strings.Contains(w, f.Path()) {
		t.Fatalf("Warning() = %q", w)
	}
}

func TestFileRefusesUnsafePaths(t *testing.T) {
	ctx := context.Background()

	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	if _, err := OpenFile(dir); err == nil || !strings.Contains(err.Error(), "written by others") {
		t.Fatalf("a world-writable directory: err = %v", err)
	}

	dir = t.TempDir()
	os.Chmod(dir, 0o700)
	f, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	f.Put(ctx, KindToken, "a", []byte("x"))
	f.Close()
	os.Chmod(f.Path(), 0o644)
	if _, err := OpenFile(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable file: err = %v", err)
	}
	os.Chmod(f.Path(), 0o600)

	// A symlink in place of the file is refused.
	dir2 := t.TempDir()
	os.Chmod(dir2, 0o700)
	os.Symlink(f.Path(), filepath.Join(dir2, FileName))
	if _, err := OpenFile(dir2); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("a symlink: err = %v", err)
	}

	// A directory made writable by others after Open: writes refuse.
	os.Chmod(dir, 0o777)
	if err := f.Put(ctx, KindToken, "b", []byte("y")); err == nil {
		t.Fatal("Put into a world-writable directory succeeded")
	}
	if _, err := f.Get(ctx, KindToken, "b"); err == nil {
		t.Fatal("a failed Put left the item in memory")
	}
	os.Chmod(dir, 0o700)

	// Another user's directory (needs root to make one).
	if os.Geteuid() == 0 {
		dir3 := t.TempDir()
		os.Chmod(dir3, 0o700)
		os.Chown(dir3, 12345, 12345)
		if _, err := OpenFile(dir3); err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
			t.Fatalf("another user's directory: err = %v", err)
		}
	}

	// A corrupt file is reported, not overwritten.
	dir4 := t.TempDir()
	os.Chmod(dir4, 0o700)
	os.WriteFile(filepath.Join(dir4, FileName), []byte("{not json"), 0o600)
	if _, err := OpenFile(dir4); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("a corrupt file: err = %v", err)
	}
}

// The file backend applies each change to the file as it is on disk: an
// edit made by hand while the agent runs is kept, not overwritten from
// what the agent read at start (issue 11 item 2).
func TestFileKeepsEditsMadeWhileOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "stepup")
	f, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []string{"a", "b", "c"} {
		if err := f.Put(ctx, KindToken, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	// Someone removes b and adds d by hand (jq, an editor's rename).
	var c fileContent
	data, _ := os.ReadFile(f.Path())
	json.Unmarshal(data, &c)
	delete(c.Items[KindToken], "b")
	c.Items[KindToken]["d"] = []byte("d")
	data, _ = json.Marshal(c)
	tmp := f.Path() + ".edit"
	os.WriteFile(tmp, data, 0o600)
	os.Rename(tmp, f.Path())

	if err := f.Put(ctx, KindToken, "e", []byte("e")); err != nil {
		t.Fatal(err)
	}
	names, _ := f.List(ctx, KindToken)
	if got := strings.Join(names, ","); got != "a,c,d,e" {
		t.Fatalf("after a hand edit and a Put: %s, want a,c,d,e", got)
	}
	data, _ = os.ReadFile(f.Path())
	c = fileContent{}
	json.Unmarshal(data, &c)
	if len(c.Items[KindToken]) != 4 || c.Items[KindToken]["b"] != nil || string(c.Items[KindToken]["d"]) != "d" {
		t.Fatalf("file after a hand edit and a Put: %s", data)
	}

	// A file left half edited is never overwritten: writes fail as
	// unavailable (the agent keeps them in memory and retries).
	os.WriteFile(tmp, []byte(`{"version": 1, "items": {`), 0o600)
	os.Rename(tmp, f.Path())
	if err := f.Put(ctx, KindToken, "f", []byte("f")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Put over a broken file: %v, want ErrUnavailable", err)
	}
	if data, _ := os.ReadFile(f.Path()); string(data) != `{"version": 1, "items": {` {
		t.Fatalf("the broken file was overwritten: %s", data)
	}
}

// Two agents must not share one file unknowingly: the second Open fails
// and names the first's pid; after Close the store can be opened again.
func TestFileLockedWhileOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "stepup")
	f, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenFile(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another stepup-agent (pid "+strconv.Itoa(os.Getpid())+")") {
		t.Fatalf("a second Open: %v", err)
	}
	f.Close()
	g, err := OpenFile(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	g.Close()
}

func TestDefaultStateDir(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/x/state")
	if d := DefaultStateDir(); d != "/x/state/stepup" {
		t.Fatalf("DefaultStateDir() = %q", d)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d := DefaultStateDir(); d != "/home/u/.local/state/stepup" {
		t.Fatalf("DefaultStateDir() = %q", d)
	}
}

// OpenFile checks keychain.json before it reads it: a FIFO (or any other
// special file) put there must be refused at once, not block the agent's
// start waiting for a writer that never comes.
func TestFileRefusesFIFOWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	if err := syscall.Mkfifo(filepath.Join(dir, FileName), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := OpenFile(dir)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "regular file") {
			t.Fatalf("a FIFO in place of the file: err = %v", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the stuck open so the test binary can exit.
		if w, err := os.OpenFile(filepath.Join(dir, FileName), os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("OpenFile blocked on a FIFO in place of the file")
	}
}

// fileContent is the file's format, as encoding/json reads it.
type fileContent struct {
	Version int                          `json:"version"`
	Items   map[string]map[string][]byte `json:"items"`
}

// TestFileFormat: the file is written byte for byte as encoding/json
// writes the items (keys sorted, values base64), although the backend
// holds only where each value is, and a value written by hand with JSON
// escapes is read as encoding/json reads it.
func TestFileFormat(t *testing.T) {
	dir := t.TempDir()
	f, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]map[string][]byte{
		KindToken:      {"b": []byte("bee"), "a<&>\"\\é": []byte{0, 1, 2, 255}, "empty": {}},
		KindCredential: {"x": bytes.Repeat([]byte("credential "), 100)},
	}
	for k, m := range want {
		for n, v := range m {
			if err := f.Put(ctx, k, n, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A replaced and a deleted item, written again from the file.
	f.Put(ctx, KindToken, "b", []byte("bee2"))
	want[KindToken]["b"] = []byte("bee2")
	f.Put(ctx, KindLimit, "gone", []byte("x"))
	f.Delete(ctx, KindLimit, "gone")
	exp, _ := json.Marshal(fileContent{Version: 1, Items: want})
	if got, _ := os.ReadFile(f.Path()); string(got) != string(exp) {
		t.Fatalf("file\n%s\nwant\n%s", got, exp)
	}
	for _, m := range f.items {
		for n, v := range m {
			if v.n < 0 && v.data != nil {
				t.Errorf("%s held in memory after a save", n)
			}
		}
	}
	f.Close()

	// By hand: "QUJD" (ABC) written with an escape, "null", and an
	// unknown top-level key.
	os.WriteFile(filepath.Join(dir, FileName), []byte(`{"note":[1,{"a":2}],"items":{"token":{"e":"\u0051UJD","n":null,"p":"QUJD"}},"version":1}`), 0o600)
	f, err = OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n, w := range map[string]string{"e": "ABC", "n": "", "p": "ABC"} {
		if v, err := f.Get(ctx, KindToken, n); err != nil || string(v) != w {
			t.Errorf("%s: %q, %v; want %q", n, v, err, w)
		}
	}
	if err := f.Put(ctx, KindToken, "q", []byte("Q")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Path())
	if want := `{"version":1,"items":{"token":{"e":"QUJD","n":null,"p":"QUJD","q":"UQ=="}}}`; string(got) != want {
		t.Fatalf("rewritten %s, want %s", got, want)
	}
}
