package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p, exists, err := Load(filepath.Join(dir, "none.yaml"))
	if err != nil || exists || p == nil || p.Resolve("wallet:export").TTL != 5*time.Minute {
		t.Fatalf("missing file: %v %v %v", p, exists, err)
	}
	path := filepath.Join(dir, "yaml")
	writeFile(t, path, "unknownScopes: deny\n")
	p, exists, err = Load(path)
	if err != nil || !exists || p.UnknownScopes != UnknownDeny {
		t.Fatalf("file: %v %v %v", p, exists, err)
	}
	writeFile(t, path, "\nunknownScopes: maybe\n")
	_, exists, err = Load(path)
	if err == nil || !exists || !strings.HasPrefix(err.Error(), path+": line 2: unknownScopes:") {
		t.Fatalf("bad file: %v %v", exists, err)
	}

	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "writable by everyone") {
		t.Fatalf("world-writable: %v", err)
	}
	if err := os.Chmod(path, 0o620); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "writable by its group (mode 0620)") {
		t.Fatalf("group-writable: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "its directory "+dir+" can be written by others (mode 0770)") {
		t.Fatalf("group-writable directory: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	writeFile(t, big, strings.Repeat("#", MaxFileSize+1))
	if _, _, err := Load(big); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("big: %v", err)
	}
}

// TestLoadOtherOwner runs only as root: a file owned by another user is
// refused.
func TestLoadOtherOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	path := filepath.Join(t.TempDir(), "yaml")
	writeFile(t, path, "{}\n")
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("other owner: %v", err)
	}
	// A directory of another user's: they could replace the file.
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "yaml")
	writeFile(t, path, "{}\n")
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "its directory "+dir+" belongs to uid 65534") {
		t.Fatalf("other owner's directory: %v", err)
	}
}

func TestLoadFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "yaml")
	if err := mkfifo(path); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := Load(path); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("fifo: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Load hangs on a FIFO")
	}
}

// A file truncated for an in-place rewrite is, for a moment, empty: that
// is not the built-in defaults (which could loosen the policy in force)
// but an error that keeps the last good policy, by the watcher and by
// Reload (SIGHUP).

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
