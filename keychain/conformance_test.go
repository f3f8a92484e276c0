package keychain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// testStore runs the Store contract against a backend. open returns a
// fresh, empty store; reopen (may be nil) returns a store over the same
// persistent data, to check that items survive a reopen.
func testStore(t *testing.T, open func(t *testing.T) Store, reopen func(t *testing.T) Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("RoundTrip", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, KindToken, "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a missing item = %v, want ErrNotFound", err)
		}
		data := []byte{0, 1, 2, 0xff, '{', '"', '\n'}
		if err := s.Put(ctx, KindToken, "jti-1", data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, KindToken, "jti-1")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get = %x, %v; want %x", got, err, data)
		}
		got[0] = 9 // the caller's copy
		if again, _ := s.Get(ctx, KindToken, "jti-1"); !bytes.Equal(again, data) {
			t.Fatalf("the store shares its buffer with the caller")
		}
		if err := s.Put(ctx, KindToken, "jti-1", []byte("second")); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, KindToken, "jti-1"); string(got) != "second" {
			t.Fatalf("after replace Get = %q", got)
		}
		if err := s.Delete(ctx, KindToken, "jti-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, KindToken, "jti-1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, KindToken, "jti-1"); err != nil {
			t.Fatalf("Delete of a missing item = %v", err)
		}
	})

	t.Run("EmptyValue", func(t *testing.T) {
		s := open(t)
		if err := s.Put(ctx, KindLimit, "totp", []byte{}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, KindLimit, "totp")
		if err != nil || len(got) != 0 {
			t.Fatalf("Get of an empty item = %q, %v", got, err)
		}
	})

	t.Run("ListByKind", func(t *testing.T) {
		s := open(t)
		for _, n := range []string{"b", "a", "c/with/slashes", "d e"} {
			if err := s.Put(ctx, KindCredential, n, []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		s.Put(ctx, KindConsumed, "a", []byte("other kind"))
		names, err := s.List(ctx, KindCredential)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"a", "b", "c/with/slashes", "d e"}; !slices.Equal(names, want) {
			t.Fatalf("List = %q, want %q", names, want)
		}
		if got, _ := s.Get(ctx, KindConsumed, "a"); string(got) != "other kind" {
			t.Fatalf("kinds are not separate: %q", got)
		}
		if names, err := s.List(ctx, KindReplay); err != nil || len(names) != 0 {
			t.Fatalf("List of an empty kind = %q, %v", names, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := fmt.Sprint("n", i)
				if err := s.Put(ctx, KindReplay, n, []byte(n)); err != nil {
					t.Error(err)
				}
				if got, err := s.Get(ctx, KindReplay, n); err != nil || string(got) != n {
					t.Errorf("Get(%s) = %q, %v", n, got, err)
				}
			}()
		}
		wg.Wait()
		if names, _ := s.List(ctx, KindReplay); len(names) != 8 {
			t.Fatalf("List after concurrent puts = %q", names)
		}
	})

	if reopen != nil {
		t.Run("SurvivesReopen", func(t *testing.T) {
			s := open(t)
			s.Put(ctx, KindKey, "signing", []byte("seed"))
			s.Put(ctx, KindToken, "gone", []byte("x"))
			s.Delete(ctx, KindToken, "gone")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2 := reopen(t)
			if got, err := s2.Get(ctx, KindKey, "signing"); err != nil || string(got) != "seed" {
				t.Fatalf("after reopen Get = %q, %v", got, err)
			}
			if _, err := s2.Get(ctx, KindToken, "gone"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a deleted item came back after reopen: %v", err)
			}
		})
	}
}

func TestMemoryConformance(t *testing.T) {
	testStore(t, func(t *testing.T) Store { return NewMemory() }, nil)
}

func TestOpenMemoryConformance(t *testing.T) {
	open := func(t *testing.T) Store {
		s, err := Open(context.Background(), "memory", Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	testStore(t, open, nil)
}

func TestFileConformance(t *testing.T) {
	var dir string
	open := func(t *testing.T) Store {
		dir = t.TempDir()
		s, err := OpenFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	reopen := func(t *testing.T) Store {
		s, err := OpenFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	testStore(t, open, reopen)
}

func TestOpenFileConformance(t *testing.T) {
	var dir string
	openAt := func(t *testing.T) Store {
		s, err := Open(context.Background(), "file", Options{StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	testStore(t, func(t *testing.T) Store { dir = t.TempDir(); return openAt(t) }, openAt)
}
