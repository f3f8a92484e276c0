package keychain

import (
	"context"
	"fmt"
	"testing"
)

// benchStore measures Put (a replace) and Get of a 200-byte item (about the size of a
// held token) on one backend.
func benchStore(b *testing.B, s Store) {
	ctx := context.Background()
	data := make([]byte, 200)
	for i := range 50 {
		if err := s.Put(ctx, KindToken, fmt.Sprint("seed-", i), data); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Put", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := s.Put(ctx, KindToken, fmt.Sprint("jti-", i%50), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Get(ctx, KindToken, fmt.Sprint("seed-", i%50)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMemory(b *testing.B) { benchStore(b, NewMemory()) }

func BenchmarkFile(b *testing.B) {
	f, err := OpenFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	benchStore(b, f)
}

// The stores Open returns: reads come from the mirror, writes go through.
func BenchmarkOpenFile(b *testing.B) {
	s, err := Open(context.Background(), "file", Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchStore(b, s)
}

// benchLoad measures what the agent pays at start: Open over a backend
// that holds 100 items (20 of each of five kinds), loading them all.
func benchLoad(b *testing.B, backend string, opts Options) {
	ctx := context.Background()
	raw, err := OpenBackend(ctx, backend, opts)
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range Kinds[1:] {
		for i := range 20 {
			if err := raw.Put(ctx, kind, fmt.Sprint("item-", i), make([]byte, 200)); err != nil {
				b.Fatal(err)
			}
		}
	}
	raw.Close()
	for b.Loop() {
		s, err := Open(ctx, backend, opts)
		if err != nil {
			b.Fatal(err)
		}
		if names, _ := s.List(ctx, KindToken); len(names) != 20 {
			b.Fatalf("loaded %d tokens", len(names))
		}
		s.Close()
	}
}

func BenchmarkLoadFile(b *testing.B) { benchLoad(b, "file", Options{StateDir: b.TempDir()}) }
