package examples_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestWalletdOnTCPVerifiesOnline: on loopback TCP every local user can
// reach walletd, so a multi-use token someone saw must stop working the
// moment the user resets it (issue 11 item 6: the offline check took it
// after stepupctl reset).
func TestWalletdOnTCPVerifiesOnline(t *testing.T) {
	a := stepuptest.Start(t, stepuptest.Options{})
	a.EnrollTOTP(t, 2)
	bin := filepath.Join(filepath.Dir(stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd")), "walletd")
	url := startWalletd(t, bin, a.Env(), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := a.StepUp(ctx, []string{"wallet:sign"})
	if err != nil {
		t.Fatal(err)
	}
	sign := func() int {
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/sign", strings.NewReader(`{"message":"hi"}`))
		req.Header.Set("X-Elevated-Token", res.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := sign(); c != http.StatusOK {
		t.Fatalf("sign with a fresh token: %d", c)
	}
	if _, err := a.Client.ResetState(ctx); err != nil {
		t.Fatal(err)
	}
	if c := sign(); c != http.StatusUnauthorized {
		t.Fatalf("sign with a token revoked by reset: %d, want 401", c)
	}
}

// TestWalletdSocketIsPrivate: walletd's default socket is 0600 in a 0700
// directory.
func TestWalletdSocketIsPrivate(t *testing.T) {
	bin := filepath.Join(filepath.Dir(stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd")), "walletd")
	run, err := os.MkdirTemp("", "walletd-run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	url := startWalletd(t, bin, append(os.Environ(), "XDG_RUNTIME_DIR="+run), "unix:"+filepath.Join(run, "w", "walletd.sock"))
	if want := "unix:" + filepath.Join(run, "w", "walletd.sock"); url != want {
		t.Fatalf("walletd listens on %s, want %s", url, want)
	}
	for path, want := range map[string]os.FileMode{filepath.Join(run, "w"): 0o700, filepath.Join(run, "w", "walletd.sock"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}
}
