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
	items map[string]map[string][]byte
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory { return &Memory{items: map[string]map[string][]byte{}} }

func (m *Memory) Get(_ context.Context, kind, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.items[kind][name]
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), d...), nil
}

func (m *Memory) Put(_ context.Context, kind, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.items[kind] == nil {
		m.items[kind] = map[string][]byte{}
	}
	m.items[kind][name] = append([]byte(nil), data...)
	return nil
}

func (m *Memory) Delete(_ context.Context, kind, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.items[kind], name)
	return nil
}

func (m *Memory) List(_ context.Context, kind string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.items[kind]))
	for n := range m.items[kind] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func (m *Memory) Backend() string { return "memory" }
func (m *Memory) Close() error    { return nil }
