package externaljwt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestE2EExternalJWT runs the real agent with a policy naming a backend's
// JWK Set: requestExternalAuthElevatedToken mints a token for a good
// assertion, and refuses an expired one, a wrong sub, a scope the
// assertion does not grant, an unknown key and a replayed jti (4002);
// a rotation of the served JWK Set (loopback URL) is picked up.
func TestE2EExternalJWT(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	be := newBackend(t)
	be.add("file-key", jose.EdDSA)
	be.add("url-old", jose.ES256)
	be.add("url-new", jose.EdDSA)
	be.add("stranger", jose.EdDSA)

	// A file JWK Set, written before the agent starts.
	dir := t.TempDir()
	path := filepath.Join(dir, "backend-jwks.json")
	writeJWKS(t, path, be.jwks("file-key"), time.Now().Add(-time.Minute))
	pol := fmt.Sprintf("limits: {maxFailures: 50, window: 15m}\nexternalJwt:\n  jwks: %s\n  subject: alice\n  audience: stepup-agent\n", path)
	a := stepuptest.Start(t, stepuptest.Options{Policy: pol})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := a.Client
	now := time.Now()

	tok, err := c.RequestExternalAuthElevatedToken(ctx, be.sign("file-key", good(now, "e2e-1")), []string{"wallet:export"})
	if err != nil {
		t.Fatalf("good assertion: %v\n%s", err, a.Log())
	}
	if tok.Method != api.ExternalJWT || tok.Token == "" || !tok.SingleUse {
		t.Fatalf("token %+v", tok)
	}
	if _, err := c.VerifyToken(ctx, tok.Token, "wallet:export", true); err != nil {
		t.Fatalf("verifyToken: %v", err)
	}

	refused := func(what, assertion string, scopes ...string) {
		t.Helper()
		if len(scopes) == 0 {
			scopes = []string{"wallet:export"}
		}
		_, err := c.RequestExternalAuthElevatedToken(ctx, assertion, scopes)
		if !errors.Is(err, api.ErrVerificationFailed) {
			t.Fatalf("%s: err = %v", what, err)
		}
	}
	refused("replayed jti", be.sign("file-key", good(now, "e2e-1")))
	expired := good(now.Add(-10*time.Minute), "e2e-2")
	refused("expired", be.sign("file-key", expired))
	wrongSub := good(now, "e2e-3")
	wrongSub.Subject = "bob"
	refused("wrong sub", be.sign("file-key", wrongSub))
	refused("wrong scope", be.sign("file-key", good(now, "e2e-4")), "user:delete")
	refused("unknown key", be.sign("stranger", good(now, "e2e-5")))
	refused("bad signature", be.signAs("stranger", "file-key", good(now, "e2e-6")))
	noAud := good(now, "e2e-7")
	noAud.Audience = jwt.Audience{"another-agent"}
	refused("wrong audience", be.sign("file-key", noAud))

	// Rotation on a loopback URL: the policy is reloaded to point at it.
	srv := newJWKSServer(t, be.jwks("url-old"))
	pol = fmt.Sprintf("limits: {maxFailures: 50, window: 15m}\nexternalJwt:\n  jwks: %s/jwks.json\n  subject: alice\n", srv.URL)
	// Replaced by rename, as editors do; the agent reloads it.
	tmp := filepath.Join(a.Dir, "policy.yaml.new")
	if err := os.WriteFile(tmp, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.Dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.RequestExternalAuthElevatedToken(ctx, be.sign("url-old", good(time.Now(), fmt.Sprintf("url-%d", time.Now().UnixNano()))), []string{"wallet:sign"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not take the URL JWK Set: %v\n%s", err, a.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The backend rotates. An assertion under the new kid makes the agent
	// fetch the set again -- at most once per DefaultMinRefetch, so one
	// that arrives right after a fetch may be refused until then.
	srv.set(be.jwks("url-new"))
	fetched := srv.fetches.Load()
	deadline = time.Now().Add(DefaultMinRefetch + 5*time.Second)
	for i := 0; ; i++ {
		_, err := c.RequestExternalAuthElevatedToken(ctx, be.sign("url-new", good(time.Now(), fmt.Sprintf("rotated-%d", i))), []string{"wallet:sign"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotated key: %v\n%s", err, a.Log())
		}
		time.Sleep(time.Second)
	}
	if n := srv.fetches.Load() - fetched; n != 1 {
		t.Fatalf("%d fetches for the rotation, want 1 (rate-limited)", n)
	}

	if strings.Contains(a.Log(), be.sign("file-key", good(now, "e2e-1"))[:40]) {
		t.Fatal("an assertion is in the agent's log")
	}
}
