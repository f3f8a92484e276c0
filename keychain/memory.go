package keychain

import (
	"context"
	"sort"
	"sync"
)

// Memory is a Store that keeps items in memory only: nothing survives a
// restart. It is safe for concurrent use.
type Memory struct {
	mu    sync.Mutex
	items items
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory { return &Memory{items: items{}} }

func (m *Memory) Get(_ context.Context, kind, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.items.get(kind, name)
}

func (m *Memory) Put(_ context.Context, kind, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items.put(kind, name, data)
	return nil
}

func (m *Memory) Delete(_ context.Context, kind, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items.del(kind, name)
	return nil
}

func (m *Memory) List(_ context.Context, kind string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.items.list(kind), nil
}

func (m *Memory) Backend() string { return "memory" }
func (m *Memory) Close() error    { return nil }

// items are (kind, name) -> data, the one piece the memory and file
// backends share. Callers hold their own lock.
type items map[string]map[string][]byte

func (it items) get(kind, name string) ([]byte, error) {
	d, ok := it[kind][name]
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), d...), nil
}

// put stores a copy of data and returns what it replaced (had: whether
// there was anything), so that a failed save can undo it.
func (it items) put(kind, name string, data []byte) (old []byte, had bool) {
	old, had = it[kind][name]
	if it[kind] == nil {
		it[kind] = map[string][]byte{}
	}
	it[kind][name] = append([]byte{}, data...)
	return old, had
}

// del removes an item and returns what it removed.
func (it items) del(kind, name string) (old []byte, had bool) {
	old, had = it[kind][name]
	delete(it[kind], name)
	return old, had
}

// undo puts back what put or del returned.
func (it items) undo(kind, name string, old []byte, had bool) {
	if had {
		if it[kind] == nil {
			it[kind] = map[string][]byte{}
		}
		it[kind][name] = old
	} else {
		delete(it[kind], name)
	}
}

func (it items) list(kind string) []string {
	names := make([]string, 0, len(it[kind]))
	for n := range it[kind] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
