//go:build linux

package main

// End to end: the real agent and stepupctl, pinentry-tty on a pty, TOTP
// codes from oathtool, and a FAKE fprintd on a private bus
// (method/fingerprint/fakefprintd): the real fprintd needs a fingerprint
// reader, which this machine does not have. With TOTP and fingerprint
// enrolled, one prompt offers both (docs/prompts.md, "Several factors at
// once").

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/method/fingerprint/fakefprintd"
)

const combinedText = "Touch the fingerprint reader, or enter the 6-digit code from your authenticator app."

var ttyEnv = []string{"TERM=xterm", "LANG=C.UTF-8"}

// startFingerprintAgent starts an agent with TOTP enrolled, then enrolls
// the fingerprint with stepupctl enroll fingerprint (which steps up for
// credential:link with a TOTP code first).
func startFingerprintAgent(t *testing.T) (*peAgent, *fakefprintd.Fprintd) {
	t.Helper()
	_, fp := fakefprintd.StartTest(context.Background(), t, "right-index-finger")
	a := startPromptAgent(t)
	c := a.startOnTTY(ttyEnv, "enroll", "fingerprint")
	c.waitFor(t, "Code:")
	c.master.Write([]byte(a.totp(0) + "\r"))
	if err := c.wait(t); err != nil {
		t.Fatalf("enroll fingerprint: %v\n%s", err, c.screen())
	}
	for _, want := range []string{"Fingers enrolled with fprintd: right-index-finger", "Enrolled fingerprint credential"} {
		if !strings.Contains(c.screen(), want) {
			t.Fatalf("enroll fingerprint did not say %q:\n%s", want, c.screen())
		}
	}
	return a, fp
}

// tokenAMR reads stepupctl prompt --json's output: the method and the
// token's amr claim.
// touchMints has fprintd report a match and checks that the prompt
// ended with a token minted by the fingerprint (amr fpt) and that no
// pinentry is left.
func touchMints(t *testing.T, a *peAgent, fp *fakefprintd.Fprintd, c *ptyClient) {
	t.Helper()
	if err := fp.Status("verify-match", true); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
	if m, amr := tokenAMR(t, c.screen()); m != "fingerprint" || !slices.Equal(amr, []string{"fpt"}) {
		t.Fatalf("minted by %s with amr %v, want fingerprint/[fpt]", m, amr)
	}
	a.waitNoPinentry()
}

func tokenAMR(t *testing.T, out string) (string, []string) {
	t.Helper()
	i := strings.Index(out, "{")
	if i < 0 {
		t.Fatalf("no JSON in output:\n%s", out)
	}
	var res struct {
		Token  string `json:"token"`
		Method string `json:"method"`
	}
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&res); err != nil {
		t.Fatalf("output: %v\n%s", err, out)
	}
	parts := strings.Split(res.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", res.Token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		AMR []string `json:"amr"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return res.Method, claims.AMR
}

// waitCalls waits until the fake has seen n calls named name.
func waitCalls(t *testing.T, fp *fakefprintd.Fprintd, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		cnt := 0
		for _, c := range fp.Calls() {
			if c == name {
				cnt++
			}
		}
		if cnt >= n {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("fake fprintd: %d %s calls wanted, calls: %v", n, name, fp.Calls())
}

func count(calls []string, name string) int {
	n := 0
	for _, c := range calls {
		if c == name {
			n++
		}
	}
	return n
}

// A wrong code asks again while the reader stays armed; then a touch
// dismisses the pinentry and mints with amr fpt.
func TestFingerprintE2ECombinedWrongCodeThenTouch(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	before := count(fp.Calls(), "VerifyStart")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, "Code:")
	c.waitFor(t, combinedText)
	c.waitFor(t, "fingerprint or totp")
	waitCalls(t, fp, "VerifyStart", before+1)

	wrong := []byte(a.totp(1))
	wrong[0] = '0' + (wrong[0]-'0'+5)%10
	c.master.Write(append(wrong, '\r'))
	c.waitFor(t, "totp verification failed")
	if !fp.Claimed() || count(fp.Calls(), "VerifyStop") != 0 {
		t.Fatalf("a wrong code disarmed the reader: claimed %v, calls %v", fp.Claimed(), fp.Calls())
	}
	a.waitPinentry() // asked again

	touchMints(t, a, fp, c)
	waitCalls(t, fp, "Release", 1)
	if fp.Claimed() {
		t.Fatal("the reader is still claimed")
	}
	if !c.cooked(t) {
		t.Fatal("the terminal was left in raw mode after the pinentry was dismissed")
	}
}

// A typed code mints with amr otp and stops the fingerprint verification.
func TestFingerprintE2ECombinedCode(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	before := count(fp.Calls(), "VerifyStart")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, combinedText)
	c.waitFor(t, "Code:")
	waitCalls(t, fp, "VerifyStart", before+1)
	c.master.Write([]byte(a.totp(1) + "\r"))
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
	if m, amr := tokenAMR(t, c.screen()); m != "totp" || !slices.Equal(amr, []string{"otp"}) {
		t.Fatalf("minted by %s with amr %v, want totp/[otp]", m, amr)
	}
	// The answer came after the reader was released.
	calls := fp.Calls()
	if count(calls, "VerifyStop") < 1 || count(calls, "Release") < 1 || fp.Claimed() {
		t.Fatalf("the fingerprint verification was not stopped: calls %v, claimed %v", calls, fp.Claimed())
	}
}

// The client hanging up mid-verification stops the verification,
// releases the reader and leaves no pinentry.
func TestFingerprintE2EClientHangsUp(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	before := count(fp.Calls(), "VerifyStart")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, combinedText)
	waitCalls(t, fp, "VerifyStart", before+1)
	c.cmd.Process.Kill()
	waitCalls(t, fp, "VerifyStop", 1)
	waitCalls(t, fp, "Release", 1)
	a.waitNoPinentry()
	if fp.Claimed() {
		t.Fatal("the reader is still claimed after the client hung up")
	}
}

// isStepUpRequired lists fingerprint only while a reader is there (the
// agent asks fprintd in the background and answers from memory).
func TestFingerprintE2EListedWhenAvailable(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	methods := func() []string {
		var r struct {
			Methods []string `json:"methods"`
		}
		out := a.ctlAny("check", "--json", "wallet:export")
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil {
			t.Fatalf("check --json: %v\n%s", err, out)
		}
		return r.Methods
	}
	if m := methods(); !slices.Contains(m, "fingerprint") || !slices.Contains(m, "totp") {
		t.Fatalf("methods %v, want totp and fingerprint", m)
	}
	fp.SetNoDevice(true)
	deadline := time.Now().Add(30 * time.Second)
	for slices.Contains(methods(), "fingerprint") {
		if time.Now().After(deadline) {
			t.Fatal("fingerprint still listed with no reader")
		}
		time.Sleep(500 * time.Millisecond)
	}
	// With no reader, the prompt offers the code alone.
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, "Code:")
	if strings.Contains(c.screen(), "fingerprint") {
		t.Fatalf("the prompt offers the fingerprint with no reader:\n%s", c.screen())
	}
	c.master.Write([]byte(a.totp(1) + "\r"))
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
}

// ctlAny runs stepupctl and returns its output whatever its exit status
// (check exits 1 when a step-up is required).
func (a *peAgent) ctlAny(args ...string) string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(binDir, "stepupctl"), args...)
	c.Env = a.env
	out, _ := c.Output()
	return string(out)
}

// fprintd refusing the reader (polkit's PermissionDenied, as for an agent
// under systemd --user): the prompt offers the code alone, and the log
// says what to configure.
func TestFingerprintE2EPermissionDeniedFallsBack(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	fp.RefuseClaim("PermissionDenied")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, "Code:")
	c.waitFor(t, "Enter the 6-digit code")
	if strings.Contains(c.screen(), "fingerprint") {
		t.Fatalf("the prompt offers the refused fingerprint:\n%s", c.screen())
	}
	c.master.Write([]byte(a.totp(1) + "\r"))
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
	if m, amr := tokenAMR(t, c.screen()); m != "totp" || !slices.Equal(amr, []string{"otp"}) {
		t.Fatalf("minted by %s with amr %v", m, amr)
	}
	log, _ := os.ReadFile(a.log)
	if !strings.Contains(string(log), "polkit rule") {
		t.Fatalf("the agent's log does not say what to configure:\n%s", log)
	}
	if fp.Claimed() {
		t.Fatal("the reader is claimed")
	}
}

// A fingerprint that does not match leaves the code prompt up: the
// verification ends after fingerprint.maxTries no-matches (3), counts one
// failure, and the reader is armed again; a touch then wins.
func TestFingerprintE2ENoMatchKeepsPrompt(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	before := count(fp.Calls(), "VerifyStart")
	claims := count(fp.Calls(), "Claim")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, combinedText)
	for i := 1; i <= 3; i++ {
		waitCalls(t, fp, "VerifyStart", before+i)
		if err := fp.Status("verify-no-match", true); err != nil {
			t.Fatal(err)
		}
	}
	waitCalls(t, fp, "Claim", claims+2) // re-armed after the failed verification
	waitCalls(t, fp, "VerifyStart", before+4)
	if len(a.pinentries()) == 0 {
		t.Fatalf("the code prompt closed after a no-match:\n%s", c.screen())
	}
	select {
	case err := <-c.done:
		t.Fatalf("stepupctl ended after a no-match: %v\n%s", err, c.screen())
	default:
	}
	touchMints(t, a, fp, c)
}

// writePolicy writes the agent's policy file and waits for it to load.
func (a *peAgent) writePolicy(t *testing.T, text string) {
	t.Helper()
	dir := filepath.Join(a.dir, "config", "stepup")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(a.log); strings.Contains(string(b), "policy loaded") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the agent did not load the policy")
}

// prompt.combine: false with prompt.order [fingerprint, totp]: the prompt
// offers the fingerprint alone; when fprintd refuses it, the next factor
// in the order is offered instead.
func TestFingerprintE2EOrderWithoutCombining(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	a.writePolicy(t, "prompt:\n  combine: false\n  order: [fingerprint, totp]\n")
	before := count(fp.Calls(), "VerifyStart")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, "Touch the fingerprint reader.")
	waitCalls(t, fp, "VerifyStart", before+1)
	if strings.Contains(c.screen(), "Code:") {
		t.Fatalf("the prompt asks for a code with combine: false:\n%s", c.screen())
	}
	// The reader alone shows what fprintd reports too.
	if err := fp.Status("verify-retry-scan", false); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "The scan did not work. Touch the reader again.")
	touchMints(t, a, fp, c)

	fp.RefuseClaim("PermissionDenied")
	c = a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, "Code:")
	c.master.Write([]byte(a.totp(1) + "\r"))
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
	if m, _ := tokenAMR(t, c.screen()); m != "totp" {
		t.Fatalf("minted by %s, want totp after the fingerprint was refused", m)
	}
}

// A wrong code that locks TOTP out (limits.maxFailures: 1) does not end
// the prompt while the reader is armed: it says so and a touch still wins.
func TestFingerprintE2ECodeLockedOutReaderStillAnswers(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	a.writePolicy(t, "limits:\n  maxFailures: 1\n")
	before := count(fp.Calls(), "VerifyStart")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, combinedText)
	c.waitFor(t, "Code:")
	waitCalls(t, fp, "VerifyStart", before+1)
	wrong := []byte(a.totp(1))
	wrong[0] = '0' + (wrong[0]-'0'+5)%10
	c.master.Write(append(wrong, '\r'))
	c.waitFor(t, "locked out")
	if !fp.Claimed() {
		t.Fatal("the lockout of the code disarmed the reader")
	}
	touchMints(t, a, fp, c)
}

// The custom-UI path (startVerification/completeVerification, as
// stepupctl prompt --stdin uses it): challenge {} arms the reader,
// completeVerification {} answers when fprintd reports a match.
func TestFingerprintE2ECustomUI(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	before := count(fp.Calls(), "VerifyStart")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(binDir, "stepupctl"), "prompt", "--json", "--stdin", "--method", "fingerprint", "wallet:export")
	c.Env = a.env
	var out strings.Builder
	c.Stdout = &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, fp, "VerifyStart", before+1)
	if err := fp.Status("verify-match", true); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, out.String())
	}
	if m, amr := tokenAMR(t, out.String()); m != "fingerprint" || !slices.Equal(amr, []string{"fpt"}) {
		t.Fatalf("minted by %s with amr %v", m, amr)
	}
	waitCalls(t, fp, "Release", 1)
}

// What fprintd reports while the reader is armed (a scan that did not
// work, a finger that did not match) is shown in the combined prompt,
// which asks again with it as its error line; the reader stays armed and
// a touch still mints.
func TestFingerprintE2EProgressShown(t *testing.T) {
	a, fp := startFingerprintAgent(t)
	before := count(fp.Calls(), "VerifyStart")
	c := a.startOnTTY(ttyEnv, "prompt", "--json", "wallet:export")
	c.waitFor(t, combinedText)
	waitCalls(t, fp, "VerifyStart", before+1)
	if err := fp.Status("verify-retry-scan", false); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "The scan did not work. Touch the reader again.")
	if err := fp.Status("verify-no-match", true); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "The fingerprint did not match. Try again.")
	waitCalls(t, fp, "VerifyStart", before+2) // re-armed
	if len(a.pinentries()) == 0 {
		t.Fatalf("no code prompt after the progress messages:\n%s", c.screen())
	}
	touchMints(t, a, fp, c)
}
