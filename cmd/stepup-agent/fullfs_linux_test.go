package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestFullFilesystemNothingLost is the fault of issue 15's "full disk":
// the agent runs with --keychain file on a real filesystem of its own (a
// 256 KiB tmpfs, mounted by the test, so it needs root), which the test
// fills. While it is full, mints, a consume, an enrollment and a TOTP
// acceptance are each either stored or refused with 4011; nothing
// refused is handed out later (the refused enrollment is not listed, the
// token whose consume was refused stays unusable); keychain.json is whole,
// the audit log (on the same filesystem) has no torn line, and no
// temporary file is left. Once space is freed the agent works
// again and stores what it kept in memory (the consumption); after a
// kill -9 and a restart every answered token is valid, every consumed one
// refused, and the enrolled credential is there.
func TestFullFilesystemNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	if os.Getuid() != 0 {
		testenv.Missing(t, "root, to mount the small tmpfs the test fills")
	}
	mount := testenv.Program(t, "mount")
	umount := testenv.Program(t, "umount")
	testenv.Program(t, "oathtool")
	bin := stepuptest.Build(t, "stepup-agent")

	dir, err := os.MkdirTemp("", "stepup-fullfs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o700)
	if out, err := exec.Command(mount, "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", state).CombinedOutput(); err != nil {
		testenv.Missing(t, "a tmpfs mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(umount, "-l", state).Run() })

	// external_jwt mints with no person and no 30-second TOTP step.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k", Algorithm: "EdDSA", Use: "sig"}}})
	jwksPath := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksPath, jwks, 0o600)
	policyPath := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyPath, []byte(fmt.Sprintf("externalJwt: {jwks: %q, subject: full, issuer: backend, audience: stepup-agent}\n"+
		"scopes:\n  full:single: {ttl: 60m, singleUse: true, methods: [external_jwt]}\n  full:multi: {ttl: 60m, singleUse: false, methods: [external_jwt]}\n"+
		"  full:totp: {ttl: 60m, singleUse: false, methods: [totp]}\n", jwksPath)), 0o600)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	assertion := func(scope string) string {
		n++
		now := time.Now()
		s, err := jwt.Signed(signer).Claims(map[string]any{"sub": "full", "iss": "backend", "aud": "stepup-agent",
			"jti": fmt.Sprintf("full-%d-%d", now.UnixNano(), n), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "scope": scope}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	sock := filepath.Join(dir, "agent.sock")
	auditPath := filepath.Join(state, "audit.jsonl") // on the full filesystem too
	var agent *exec.Cmd
	var log *syncBuf
	start := func() *stepup.Client {
		t.Helper()
		os.Remove(sock)
		log = &syncBuf{}
		agent = exec.Command(bin, "-D", "-a", sock, "--keychain", "file", "--prompter", "none",
			"--policy", policyPath, "--audit", auditPath)
		agent.Env = append(os.Environ(), "XDG_STATE_HOME="+state, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
			"XDG_RUNTIME_DIR="+dir, "HOME="+dir)
		agent.Stdout, agent.Stderr = log, log
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		c := &stepup.Client{Socket: sock, Env: &api.PromptEnv{}}
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := c.Status(ctx)
			cancel()
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent did not answer: %v\n%s", err, log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	kill := func(c *stepup.Client) {
		c.Close()
		agent.Process.Kill()
		agent.Wait()
	}
	t.Cleanup(func() {
		if agent != nil && agent.ProcessState == nil {
			agent.Process.Kill()
			agent.Wait()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	c := start()
	mint := func(scope string) (string, error) {
		r, err := c.RequestExternalAuthElevatedToken(ctx, assertion(scope), []string{scope})
		if err != nil {
			return "", err
		}
		return r.Token, nil
	}
	valid := func(c *stepup.Client, tok, scope string) bool {
		_, err := c.VerifyToken(ctx, tok, scope, false)
		return err == nil
	}
	mustMint := func(scope string) string {
		t.Helper()
		tok, err := mint(scope)
		if err != nil {
			t.Fatalf("mint %s: %v\n%s", scope, err, log.String())
		}
		return tok
	}
	// wantNotStored checks a refusal is the clear one: 4011, saying
	// what happened and what to do.
	wantNotStored := func(what string, err error) {
		t.Helper()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeKeychainFailed || ae.Data.Reason != "keychain_failed" ||
			!strings.Contains(ae.Message, "no space left on device") || !strings.Contains(ae.Data.Hint, "free disk space") {
			t.Fatalf("%s on a full filesystem: want a 4011 naming the full disk and saying to free space, got %v", what, err)
		}
	}
	kc := filepath.Join(state, "stepup", "keychain.json")
	wantWhole := func(when string) {
		t.Helper()
		b, err := os.ReadFile(kc)
		if err != nil || !json.Valid(b) {
			t.Fatalf("%s: keychain.json unreadable or half-written: %v", when, err)
		}
		al, err := os.ReadFile(auditPath)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		for i, line := range strings.Split(strings.TrimSuffix(string(al), "\n"), "\n") {
			if !json.Valid([]byte(line)) {
				t.Fatalf("%s: audit line %d is torn: %q", when, i+1, line)
			}
		}
		// A write under way has its temporary file for a moment; one
		// still there a second later was left behind.
		tmps, _ := filepath.Glob(filepath.Join(state, "stepup", ".keychain-*"))
		if len(tmps) > 0 {
			time.Sleep(time.Second)
			for _, tmp := range tmps {
				if _, err := os.Stat(tmp); err == nil {
					t.Fatalf("%s: temporary file left: %s", when, tmp)
				}
			}
		}
	}
	totp := &totpCodes{}

	// Before filling: tokens that must survive everything below.
	var keep []string
	for i := 0; i < 5; i++ {
		keep = append(keep, mustMint("full:multi"))
	}
	single := mustMint("full:single")   // consumed while full
	survivor := mustMint("full:single") // never consumed
	wantWhole("before filling")

	filler := filepath.Join(state, "filler")
	fill := func() {
		t.Helper()
		f, err := os.OpenFile(filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		for {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
		for { // the last bytes
			if _, err := f.Write(buf[:1]); err != nil {
				break
			}
		}
		f.Close()
	}
	fill()

	// Full: nothing that would need a write is answered as done.
	for i := 0; i < 20; i++ {
		if tok, err := mint("full:multi"); err == nil {
			keep = append(keep, tok) // stored after all: it must survive
		} else {
			wantNotStored("a mint", err)
		}
	}
	if _, err := c.VerifyToken(ctx, single, "full:single", true); err != nil {
		wantNotStored("a consume", err)
	} else {
		t.Fatal("a consume was answered as done on a full filesystem")
	}
	if valid(c, single, "full:single") {
		t.Fatal("the token whose consume was refused is valid again")
	}
	if _, err := c.VerifyToken(ctx, single, "full:single", true); err == nil {
		t.Fatal("the token whose consume was refused could be consumed after all")
	}
	en, err := c.EnrollStart(ctx, api.EnrollStartParams{Method: api.TOTP})
	if err != nil {
		t.Fatalf("enrollStart: %v", err)
	}
	_, err = c.EnrollFinish(ctx, en.EnrollmentID, map[string]string{"code": totp.next(t, en.Secret)})
	wantNotStored("an enrollment", err)
	if creds, err := c.ListCredentials(ctx); err != nil || len(creds) != 0 {
		t.Fatalf("after the refused enrollment: credentials %v, %v; want none", creds, err)
	}
	for _, tok := range keep[:5] {
		if !valid(c, tok, "full:multi") {
			t.Fatal("a token minted before filling is not valid while the filesystem is full")
		}
	}
	st, err := c.Status(ctx)
	if err != nil || !strings.Contains(st.Keychain.Warning, "cannot store changes") {
		t.Fatalf("status while full: keychain warning %q, %v; want it to say the keychain cannot store changes", st.Keychain.Warning, err)
	}
	wantWhole("while full")

	// Space returns: the kept consumption is stored, and everything works.
	os.Remove(filler)
	totp = &totpCodes{}
	en, err = c.EnrollStart(ctx, api.EnrollStartParams{Method: api.TOTP})
	if err != nil {
		t.Fatalf("enrollStart after freeing: %v", err)
	}
	if _, err := c.EnrollFinish(ctx, en.EnrollmentID, map[string]string{"code": totp.next(t, en.Secret)}); err != nil {
		t.Fatalf("enrollFinish after freeing: %v\n%s", err, log.String())
	}
	ch, err := c.StartVerification(ctx, api.TOTP, []string{"full:totp"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": totp.next(t, en.Secret)})
	if err != nil {
		t.Fatalf("a TOTP step-up after freeing: %v", err)
	}
	totpTok := tr.Token
	after := mustMint("full:multi")
	keep = append(keep, after)
	if !valid(c, after, "full:multi") || !valid(c, totpTok, "full:totp") {
		t.Fatal("tokens minted after freeing are not valid")
	}
	jti := jtiOf(t, single)
	deadline := time.Now().Add(10 * time.Second)
	for !consumedOnDisk(kc, jti) {
		if time.Now().After(deadline) {
			t.Fatalf("the consumption refused while full was not stored within 10s of freeing space\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Full again: a TOTP code the agent could not record is refused, and
	// stays used while the agent runs.
	fill()
	code := totp.next(t, en.Secret)
	ch, err = c.StartVerification(ctx, api.TOTP, []string{"full:totp"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
	wantNotStored("a TOTP step-up", err)
	if ch, err = c.StartVerification(ctx, api.TOTP, []string{"full:totp"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code}); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("the TOTP code refused while full, sent again: want 4002 (used), got %v", err)
	}
	wantWhole("full again")

	// kill -9 while full, restart on the same (still full) filesystem.
	before, err := c.ListCredentials(ctx)
	if err != nil || len(before) != 2 {
		t.Fatalf("credentials after enrolling once: %v, %v; want the TOTP credential and its recovery codes", before, err)
	}
	kill(c)
	c = start()
	defer c.Close()
	for _, tok := range keep {
		if !valid(c, tok, "full:multi") {
			t.Fatalf("a token answered before the restart is not valid after it\n%s", log.String())
		}
	}
	if !valid(c, survivor, "full:single") || !valid(c, totpTok, "full:totp") {
		t.Fatal("a token answered before the restart is not valid after it")
	}
	if valid(c, single, "full:single") {
		t.Fatal("a token whose consumption was refused while full, and stored once space returned, is valid after the restart")
	}
	if creds, err := c.ListCredentials(ctx); err != nil || len(creds) != len(before) || creds[0].ID != before[0].ID || creds[1].ID != before[1].ID {
		t.Fatalf("after the restart: credentials %v, %v; want %v, enrolled after freeing", creds, err, before)
	}
	wantWhole("after the restart")
	os.Remove(filler)
}

// totpCodes hands out codes of one secret for increasing time steps the
// agent accepts (±1 step), waiting for the next step when they are spent.
type totpCodes struct{ last uint64 }

func (c *totpCodes) next(t *testing.T, secret string) string {
	t.Helper()
	for {
		now := time.Now()
		cur := uint64(now.Unix() / 30)
		lo := cur - 1
		if now.Unix()%30 >= 27 {
			lo = cur
		}
		for ctr := lo; ctr <= cur+1; ctr++ {
			if ctr > c.last {
				c.last = ctr
				cmd := exec.Command("oathtool", "--totp", "-b", "-N", "@"+strconv.FormatUint(ctr*30, 10), "-")
				cmd.Stdin = strings.NewReader(secret + "\n")
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("oathtool: %v", err)
				}
				return strings.TrimSpace(string(out))
			}
		}
		time.Sleep(time.Until(time.Unix(int64(cur+1)*30, 0)) + 200*time.Millisecond)
	}
}

// jtiOf reads a token's jti without verifying it.
func jtiOf(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		JTI string `json:"jti"`
	}
	json.Unmarshal(b, &c)
	return c.JTI
}

// consumedOnDisk reports whether keychain.json records jti as consumed
// and no longer holds its token.
func consumedOnDisk(path, jti string) bool {
	b, _ := os.ReadFile(path)
	var f struct {
		Items map[string]map[string][]byte `json:"items"`
	}
	if json.Unmarshal(b, &f) != nil {
		return false
	}
	_, consumed := f.Items["consumed"][jti]
	_, held := f.Items["token"][jti]
	return consumed && !held
}
