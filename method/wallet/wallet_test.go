package wallet

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// requireAll reports whether a missing prerequisite must fail the test
// (CI) rather than skip it.
func requireAll() bool {
	return testenv.Strict()
}

func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, format, args...)
}

func repoRoot(t *testing.T) string { return testenv.RepoRoot(t) }

// ethWallet is a wallet run by ethers v6 in node (testdata/npm/sign.mjs).
type ethWallet struct {
	t      *testing.T
	script string
	Key    string
	Addr   string
}

type signOut struct {
	Address    string `json:"address"`
	PrivateKey string `json:"privateKey"`
	Signature  string `json:"signature"`
	Siwe       *struct {
		Domain         string `json:"domain"`
		Address        string `json:"address"`
		Statement      string `json:"statement"`
		URI            string `json:"uri"`
		Version        string `json:"version"`
		ChainID        int    `json:"chainId"`
		Nonce          string `json:"nonce"`
		IssuedAt       string `json:"issuedAt"`
		ExpirationTime string `json:"expirationTime"`
	} `json:"siwe"`
}

var nodeOnce sync.Once

func newEthWallet(t *testing.T) *ethWallet {
	t.Helper()
	root := repoRoot(t)
	script := filepath.Join(root, "testdata", "npm", "sign.mjs")
	if _, err := exec.LookPath("node"); err != nil {
		missing(t, "node is not installed (apt-get install nodejs)")
	}
	if _, err := os.Stat(filepath.Join(root, "testdata", "npm", "node_modules", "ethers")); err != nil {
		missing(t, "ethers is not installed: run scripts/install-deps.sh (npm install in testdata/npm)")
	}
	w := &ethWallet{t: t, script: script}
	out := w.run(map[string]any{})
	w.Key, w.Addr = out.PrivateKey, out.Address
	return w
}

func (w *ethWallet) run(req map[string]any) signOut {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, _ := json.Marshal(req)
	cmd := exec.CommandContext(ctx, "node", w.script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		w.t.Fatalf("node sign.mjs: %v: %s", err, stderr.String())
	}
	var out signOut
	if err := json.Unmarshal(b, &out); err != nil {
		w.t.Fatalf("node sign.mjs output %q: %v", b, err)
	}
	return out
}

// sign signs msg with ethers' Wallet.signMessage (EIP-191).
func (w *ethWallet) sign(msg string) string {
	return w.run(map[string]any{"privateKey": w.Key, "message": msg}).Signature
}

func sigResp(sig string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"signature": sig})
	return b
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Now()} }
func newMethod(c *clock) (*Method, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return New(Config{Deps: method.Deps{Logger: zap.New(core), Now: c.now}}), logs
}

// enroll enrolls w's address through EnrollStart/EnrollFinish.
func enroll(t *testing.T, m *Method, w *ethWallet, addr string) *method.Credential {
	t.Helper()
	ctx := context.Background()
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	msg := res.(*api.WalletChallenge).Message
	cred, err := m.EnrollFinish(ctx, st, sigResp(w.sign(msg)))
	if err != nil {
		t.Fatalf("enrollment refused: %v", err)
	}
	cred.ID = "wallet-1"
	return cred
}

func start(t *testing.T, m *Method, creds []*method.Credential) (any, string) {
	t.Helper()
	st, ch, err := m.Start(context.Background(), method.StartRequest{Creds: creds, Scopes: []string{"wallet:export", "credential:link"}})
	if err != nil {
		t.Fatal(err)
	}
	return st, ch.(*api.WalletChallenge).Message
}

func mustFail(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("%s: err = %v, want verification failed", what, err)
	}
}

// n is secp256k1's group order.
var n, _ = new(big.Int).SetString("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16)

// highSTwin returns the other valid signature of the same message and
// key: s' = n - s with the recovery id flipped.
func highSTwin(t *testing.T, sig string) string {
	raw, err := hex.DecodeString(sig[2:])
	if err != nil || len(raw) != 65 {
		t.Fatalf("bad signature from ethers")
	}
	s := new(big.Int).SetBytes(raw[32:64])
	s2 := new(big.Int).Sub(n, s)
	out := append([]byte{}, raw...)
	copy(out[32:64], s2.FillBytes(make([]byte, 32)))
	if out[64] == 27 {
		out[64] = 28
	} else {
		out[64] = 27
	}
	return "0x" + hex.EncodeToString(out)
}

func TestWalletWithEthers(t *testing.T) {
	w := newEthWallet(t)
	other := newEthWallet(t)
	c := newClock()
	m, logs := newMethod(c)
	ctx := context.Background()

	// Enrolling with the all-lower-case spelling works and stores EIP-55.
	cred := enroll(t, m, w, strings.ToLower(w.Addr))
	var sec secret
	_ = json.Unmarshal(cred.Secret, &sec)
	if sec.Address != w.Addr {
		t.Fatalf("stored %s, ethers says %s", sec.Address, w.Addr)
	}
	creds := []*method.Credential{cred}

	t.Run("message is EIP-4361", func(t *testing.T) {
		_, msg := start(t, m, creds)
		out := w.run(map[string]any{"privateKey": w.Key, "message": msg, "parse": true})
		s := out.Siwe
		if s == nil || s.Domain != "localhost" || s.Address != w.Addr || s.URI != "http://localhost" ||
			s.Version != "1" || s.ChainID != 1 || len(s.Nonce) < 8 || s.IssuedAt == "" || s.ExpirationTime == "" {
			t.Fatalf("siwe parsed %+v from\n%s", s, msg)
		}
		if !strings.Contains(s.Statement, "wallet:export") || !strings.Contains(s.Statement, "credential:link") {
			t.Fatalf("statement %q does not name the scopes", s.Statement)
		}
		iss, _ := time.Parse(time.RFC3339, s.IssuedAt)
		exp, _ := time.Parse(time.RFC3339, s.ExpirationTime)
		if exp.Sub(iss) != DefaultTTL {
			t.Fatalf("expiry %v after issue", exp.Sub(iss))
		}
	})

	t.Run("accepted", func(t *testing.T) {
		st, msg := start(t, m, creds)
		got, err := m.Complete(ctx, st, creds, sigResp(w.sign(msg)))
		if err != nil || got.ID != cred.ID {
			t.Fatalf("good signature refused: %v", err)
		}
	})

	t.Run("v as 0/1 accepted", func(t *testing.T) {
		st, msg := start(t, m, creds)
		sig := w.sign(msg)
		raw, _ := hex.DecodeString(sig[2:])
		raw[64] -= 27
		if _, err := m.Complete(ctx, st, creds, sigResp("0x"+hex.EncodeToString(raw))); err != nil {
			t.Fatalf("v=%d refused: %v", raw[64], err)
		}
	})

	t.Run("tampered message", func(t *testing.T) {
		st, msg := start(t, m, creds)
		tampered := strings.Replace(msg, "Chain ID: 1", "Chain ID: 5", 1)
		_, err := m.Complete(ctx, st, creds, sigResp(w.sign(tampered)))
		mustFail(t, "tampered", err)
	})

	t.Run("wrong address", func(t *testing.T) {
		st, msg := start(t, m, creds)
		_, err := m.Complete(ctx, st, creds, sigResp(other.sign(msg)))
		mustFail(t, "another key", err)
	})

	t.Run("flipped v", func(t *testing.T) {
		st, msg := start(t, m, creds)
		sig := w.sign(msg)
		raw, _ := hex.DecodeString(sig[2:])
		raw[64] ^= 27 ^ 28
		_, err := m.Complete(ctx, st, creds, sigResp("0x"+hex.EncodeToString(raw)))
		mustFail(t, "flipped v", err)
	})

	t.Run("high-S twin", func(t *testing.T) {
		st, msg := start(t, m, creds)
		twin := highSTwin(t, w.sign(msg))
		// The twin is a valid ECDSA signature by the same key: only
		// EIP-2's low-S rule refuses it.
		raw, _ := hex.DecodeString(twin[2:])
		compact := append([]byte{raw[64]}, raw[:64]...)
		pub, _, err := ecdsa.RecoverCompact(compact, personalHash(msg))
		if err != nil || pubkeyAddress(pub) != w.Addr {
			t.Fatalf("the twin should recover the same address: %v", err)
		}
		_, err = m.Complete(ctx, st, creds, sigResp(twin))
		mustFail(t, "high-S twin", err)
	})

	t.Run("reused nonce", func(t *testing.T) {
		st, msg := start(t, m, creds)
		sig := w.sign(msg)
		if _, err := m.Complete(ctx, st, creds, sigResp(sig)); err != nil {
			t.Fatal(err)
		}
		_, err := m.Complete(ctx, st, creds, sigResp(sig))
		mustFail(t, "replayed", err)
	})

	t.Run("a failure consumes the challenge", func(t *testing.T) {
		st, msg := start(t, m, creds)
		mustFail(t, "garbage", func() error { _, err := m.Complete(ctx, st, creds, sigResp("0x1234")); return err }())
		_, err := m.Complete(ctx, st, creds, sigResp(w.sign(msg)))
		mustFail(t, "good signature after a failure", err)
	})

	t.Run("expired", func(t *testing.T) {
		st, msg := start(t, m, creds)
		sig := w.sign(msg)
		c.add(DefaultTTL + time.Second)
		_, err := m.Complete(ctx, st, creds, sigResp(sig))
		mustFail(t, "expired", err)
	})

	t.Run("removed credential", func(t *testing.T) {
		st, msg := start(t, m, creds)
		_, err := m.Complete(ctx, st, nil, sigResp(w.sign(msg)))
		mustFail(t, "credential removed", err)
	})

	t.Run("malformed", func(t *testing.T) {
		for _, bad := range []string{"", "0x", "zz", "0x" + strings.Repeat("00", 65), "0x" + strings.Repeat("ab", 64), "0x" + strings.Repeat("ab", 64) + "1d"} {
			st, _ := start(t, m, creds)
			_, err := m.Complete(ctx, st, creds, sigResp(bad))
			mustFail(t, fmt.Sprintf("signature %q", bad), err)
		}
	})

	// No signature, nonce-bearing message or key in the logs.
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, "Nonce") || strings.Contains(strings.ToLower(line), strings.ToLower(w.Key[2:20])) {
			t.Fatalf("log line holds a message or key: %s", line)
		}
	}
}

func TestEnrollRefusesAnotherSigner(t *testing.T) {
	w := newEthWallet(t)
	other := newEthWallet(t)
	m, _ := newMethod(newClock())
	ctx := context.Background()
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{Address: w.Addr})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.EnrollFinish(ctx, st, sigResp(other.sign(res.(*api.WalletChallenge).Message)))
	mustFail(t, "enrollment signed by another key", err)
	// and the enrollment message is single-use too
	_, err = m.EnrollFinish(ctx, st, sigResp(w.sign(res.(*api.WalletChallenge).Message)))
	mustFail(t, "enrollment retried", err)
}

func TestParseAddress(t *testing.T) {
	// EIP-55's own test vectors.
	for _, a := range []string{
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
		"0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
		"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
	} {
		got, err := ParseAddress(a)
		if err != nil || got != a {
			t.Errorf("ParseAddress(%s) = %s, %v", a, got, err)
		}
		if got, err := ParseAddress(strings.ToLower(a)); err != nil || got != a {
			t.Errorf("lower case %s: %s, %v", a, got, err)
		}
		if got, err := ParseAddress("0x" + strings.ToUpper(a[2:])); err != nil || got != a {
			t.Errorf("upper case %s: %s, %v", a, got, err)
		}
		// One letter's case changed: a bad checksum.
		b := []byte(a)
		for i := 2; i < len(b); i++ {
			if b[i] >= 'a' && b[i] <= 'f' {
				b[i] -= 'a' - 'A'
				break
			}
		}
		if _, err := ParseAddress(string(b)); !errors.Is(err, errAddrChecksum) {
			t.Errorf("bad checksum %s: %v", b, err)
		}
	}
	for _, bad := range []string{"", "0x", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", "0xgaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
	m, _ := newMethod(newClock())
	if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Address: "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}); !errors.Is(err, api.ErrInvalidParams) {
		t.Fatalf("enrolling a bad checksum: %v", err)
	}
}

func TestNonce(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s, err := Nonce()
		if err != nil || len(s) < 8 {
			t.Fatal(s, err)
		}
		for _, r := range s {
			if !strings.ContainsRune(nonceAlphabet, r) {
				t.Fatalf("nonce %q", s)
			}
		}
		if seen[s] {
			t.Fatal("repeated nonce")
		}
		seen[s] = true
	}
}

func TestStartWithoutCredential(t *testing.T) {
	m, _ := newMethod(newClock())
	if _, _, err := m.Start(context.Background(), method.StartRequest{}); !errors.Is(err, api.ErrNotEnrolled) {
		t.Fatal(err)
	}
}

func TestStartAsksTheOldestAddress(t *testing.T) {
	m, _ := newMethod(newClock())
	mk := func(id, addr string, age time.Duration) *method.Credential {
		b, _ := json.Marshal(secret{Address: addr})
		return &method.Credential{ID: id, Method: api.Wallet, CreatedAt: time.Now().Add(-age), Secret: b}
	}
	older := mk("b", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", time.Hour)
	newer := mk("a", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", time.Minute)
	for _, creds := range [][]*method.Credential{{older, newer}, {newer, older}} {
		_, ch, err := m.Start(context.Background(), method.StartRequest{Creds: creds})
		if err != nil {
			t.Fatal(err)
		}
		if got := ch.(*api.WalletChallenge).Address; got != "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" {
			t.Fatalf("asked for %v", got)
		}
	}
}
