package wallet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestE2EWallet runs the real agent with a wallet run by ethers v6:
// enrollment proves control of the address; a signature over the
// agent's EIP-4361 message mints a token; a tampered message, another
// key, a flipped v and the high-S twin are refused with 4002, and a
// challenge cannot be answered twice.
func TestE2EWallet(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	w := newEthWallet(t)
	other := newEthWallet(t)
	a := stepuptest.Start(t, stepuptest.Options{Policy: "limits: {maxFailures: 20, window: 15m}\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := a.Client

	// Enrollment: a wrong signer is refused, then the right one works.
	res, err := c.EnrollStart(ctx, api.EnrollStartParams{Method: api.Wallet, Address: strings.ToLower(w.Addr)})
	if err != nil {
		t.Fatalf("enrollStart: %v\n%s", err, a.Log())
	}
	msg := res.Message
	if !strings.Contains(msg, w.Addr) || !strings.HasPrefix(msg, "localhost wants you to sign in with your Ethereum account:\n") {
		t.Fatalf("enrollment message:\n%s", msg)
	}
	if _, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]string{"signature": other.sign(msg)}); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("enrollment signed by another key: %v", err)
	}
	res, err = c.EnrollStart(ctx, api.EnrollStartParams{Method: api.Wallet, Address: w.Addr})
	if err != nil {
		t.Fatal(err)
	}
	fin, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]string{"signature": w.sign(res.Message)})
	if err != nil {
		t.Fatalf("enrollFinish: %v\n%s", err, a.Log())
	}
	if fin.Method != api.Wallet || fin.CredentialID == "" {
		t.Fatalf("enrollFinish %+v", fin)
	}

	challenge := func(scope string) (string, string) {
		t.Helper()
		ch, err := c.StartVerification(ctx, api.Wallet, []string{scope})
		if err != nil {
			t.Fatalf("startVerification: %v\n%s", err, a.Log())
		}
		var body struct {
			Message string `json:"message"`
		}
		if err := json.Unmarshal(ch.Challenge, &body); err != nil || body.Message == "" {
			t.Fatalf("challenge %s", ch.Challenge)
		}
		// The message is EIP-4361 as siwe parses it.
		out := w.run(map[string]any{"privateKey": w.Key, "message": body.Message, "parse": true})
		if out.Siwe == nil || out.Siwe.Address != w.Addr || out.Siwe.ChainID != 1 {
			t.Fatalf("siwe parsed %+v", out.Siwe)
		}
		return ch.ChallengeID, body.Message
	}
	refused := func(what, id, sig string) {
		t.Helper()
		if _, err := c.CompleteVerification(ctx, id, map[string]string{"signature": sig}); !errors.Is(err, api.ErrVerificationFailed) {
			t.Fatalf("%s: %v", what, err)
		}
	}

	id, msg := challenge("wallet:export")
	sig := w.sign(msg)
	tok, err := c.CompleteVerification(ctx, id, map[string]string{"signature": sig})
	if err != nil {
		t.Fatalf("good signature: %v\n%s", err, a.Log())
	}
	if tok.Method != api.Wallet || tok.Token == "" {
		t.Fatalf("token %+v", tok)
	}
	claims, err := c.VerifyToken(ctx, tok.Token, "wallet:export", true)
	if err != nil || !strings.Contains(strings.Join(claims.AMR, " "), "swk") {
		t.Fatalf("verifyToken: %+v %v", claims, err)
	}
	// The same answer again: the challenge is gone.
	if _, err := c.CompleteVerification(ctx, id, map[string]string{"signature": sig}); err == nil {
		t.Fatal("a challenge was answered twice")
	}
	// The old signature on a fresh challenge (another nonce) fails.
	id, _ = challenge("wallet:export")
	refused("a signature over an earlier message", id, sig)

	id, msg = challenge("wallet:export")
	refused("tampered message", id, w.sign(strings.Replace(msg, "Chain ID: 1", "Chain ID: 137", 1)))

	id, msg = challenge("wallet:export")
	refused("another key", id, other.sign(msg))

	id, msg = challenge("wallet:export")
	raw, _ := hex.DecodeString(w.sign(msg)[2:])
	raw[64] ^= 27 ^ 28
	refused("flipped v", id, "0x"+hex.EncodeToString(raw))

	id, msg = challenge("wallet:export")
	refused("high-S twin", id, highSTwin(t, w.sign(msg)))

	// v as 0/1 works through the agent too.
	id, msg = challenge("wallet:sign")
	raw, _ = hex.DecodeString(w.sign(msg)[2:])
	raw[64] -= 27
	if _, err := c.CompleteVerification(ctx, id, map[string]string{"signature": "0x" + hex.EncodeToString(raw)}); err != nil {
		t.Fatalf("v=%d: %v", raw[64], err)
	}

	if strings.Contains(a.Log(), sig[2:40]) || strings.Contains(a.Log(), "Nonce:") {
		t.Fatalf("a signature or message is in the agent's log:\n%s", a.Log())
	}
}
