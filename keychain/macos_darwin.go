//go:build darwin && cgo

package keychain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	gokeychain "github.com/keybase/go-keychain"
)

// MacService is the kSecAttrService of every generic password this agent
// stores in the macOS Keychain; the account is "kind/name".
const MacService = "stepup-agent"

func init() {
	openMacOS = func(ctx context.Context, opts Options) (Store, error) { return OpenMacOS(ctx, opts) }
	openAuto = func(ctx context.Context, opts Options) (Store, error) {
		s, err := OpenMacOS(ctx, opts)
		if err != nil {
			return autoFallback(ctx, opts, "the macOS Keychain did not answer ("+err.Error()+
				"); unlock the login keychain, or run stepup-agent with --keychain file")
		}
		r, err := newResilient(ctx, s, opts, "")
		if err != nil {
			return autoFallback(ctx, opts, "the macOS Keychain did not answer ("+err.Error()+
				"); unlock the login keychain, or run stepup-agent with --keychain file")
		}
		return r, nil
	}
}

// MacOS is a Store over the login keychain's generic passwords, through
// github.com/keybase/go-keychain. Like the Secret Service backend, every
// call runs under a deadline (Options.Timeout), one at a time, so a
// keychain that waits on a dialog cannot hold up the agent; at most one
// call is ever outstanding.
type MacOS struct {
	timeout time.Duration
	sem     chan struct{}
}

// OpenMacOS opens the login keychain and checks that it answers.
func OpenMacOS(ctx context.Context, opts Options) (*MacOS, error) {
	opts = opts.withDefaults()
	m := &MacOS{timeout: opts.Timeout, sem: make(chan struct{}, 1)}
	if _, err := m.List(ctx, KindKey); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *MacOS) do(ctx context.Context, what string, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: macos %s: an earlier call is still waiting for the keychain", ErrUnavailable, what)
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-m.sem }()
		done <- fn()
	}()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("%w: macos %s: %v", ErrUnavailable, what, err)
	case <-ctx.Done():
		return fmt.Errorf("%w: macos %s: %w within %s", ErrUnavailable, what, errNoAnswer, m.timeout)
	}
}

func account(kind, name string) string { return kind + "/" + name }

func (m *MacOS) query(kind, name string) gokeychain.Item {
	q := gokeychain.NewItem()
	q.SetSecClass(gokeychain.SecClassGenericPassword)
	q.SetService(MacService)
	q.SetAccount(account(kind, name))
	return q
}

func (m *MacOS) Get(ctx context.Context, kind, name string) ([]byte, error) {
	var out []byte
	err := m.do(ctx, "get", func() error {
		q := m.query(kind, name)
		q.SetMatchLimit(gokeychain.MatchLimitOne)
		q.SetReturnData(true)
		res, err := gokeychain.QueryItem(q)
		if errors.Is(err, gokeychain.ErrorItemNotFound) || (err == nil && len(res) == 0) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		out = append([]byte{}, res[0].Data...)
		return nil
	})
	return out, err
}

func (m *MacOS) Put(ctx context.Context, kind, name string, data []byte) error {
	return m.do(ctx, "put", func() error {
		item := gokeychain.NewGenericPassword(MacService, account(kind, name), MacService+" "+account(kind, name), data, "")
		item.SetSynchronizable(gokeychain.SynchronizableNo)
		item.SetAccessible(gokeychain.AccessibleAfterFirstUnlockThisDeviceOnly)
		err := gokeychain.AddItem(item)
		if errors.Is(err, gokeychain.ErrorDuplicateItem) {
			upd := gokeychain.NewItem()
			upd.SetData(data)
			err = gokeychain.UpdateItem(m.query(kind, name), upd)
		}
		return err
	})
}

func (m *MacOS) Delete(ctx context.Context, kind, name string) error {
	return m.do(ctx, "delete", func() error {
		err := gokeychain.DeleteItem(m.query(kind, name))
		if errors.Is(err, gokeychain.ErrorItemNotFound) {
			return nil
		}
		return err
	})
}

func (m *MacOS) List(ctx context.Context, kind string) ([]string, error) {
	var names []string
	err := m.do(ctx, "list", func() error {
		accounts, err := gokeychain.GetGenericPasswordAccounts(MacService)
		if errors.Is(err, gokeychain.ErrorItemNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, a := range accounts {
			if n, ok := strings.CutPrefix(a, kind+"/"); ok && n != "" {
				names = append(names, n)
			}
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

func (m *MacOS) Backend() string { return "macos" }
func (m *MacOS) Close() error    { return nil }
