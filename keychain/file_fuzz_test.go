package keychain

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenFile: whatever keychain.json holds (a crash mid-write, an edit
// by hand, a hostile program of the user), OpenFile either refuses it
// with an error naming the file or opens it, and an opened store lists,
// reads and rewrites its items without panic; the rewrite opens again.
func FuzzOpenFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"items":{"credential":{"a":"eyJ4IjoxfQ=="}}}`))
	f.Add([]byte(`{"version":1,"items":{}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"items":{"k":{"n":"!!"}}}`))
	f.Add([]byte(`{"version":1,"items":{"k":null}}`))
	f.Add([]byte(`{"version":1,"items":{"k":{"n":""}}`)) // cut short
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := OpenFile(dir)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		ctx := context.Background()
		for kind := range st.items {
			names, err := st.List(ctx, kind)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				if _, err := st.Get(ctx, kind, n); err != nil {
					t.Fatalf("listed %s/%s unreadable: %v", kind, n, err)
				}
			}
		}
		if err := st.Put(ctx, "fuzz", "x", []byte("y")); err != nil {
			t.Fatalf("put: %v", err)
		}
		// One agent at a time holds the file (it is locked): close it, as
		// a restart would, before opening it again.
		if err := st.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		st2, err := OpenFile(dir)
		if err != nil {
			t.Fatalf("the file it wrote does not open: %v", err)
		}
		defer st2.Close()
		if v, err := st2.Get(ctx, "fuzz", "x"); err != nil || string(v) != "y" {
			t.Fatalf("lost the write: %q, %v", v, err)
		}
	})
}
