package passkey

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
	"github.com/stepup-agent/stepup-agent/method"
)

// snoopEvent is one line of testdata/snoop's output.
type snoopEvent struct {
	Event  string `json:"event"`
	URL    string `json:"url"`
	Path   string `json:"path"`
	Status int    `json:"status"`
	Err    string `json:"err"`
}

// startSnoop runs testdata/snoop as nobody (setpriv) for d and returns a
// function that waits for it and returns what it printed.
func startSnoop(t *testing.T, d time.Duration) func() []snoopEvent {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "running a program as another user needs root (setpriv)")
	}
	setpriv := testenv.Program(t, "setpriv")
	bin := stepuptest.BuildPackage(t, stepuptest.Module+"/method/passkey/testdata/snoop")
	// nobody cannot enter the build's private directory: copy it out.
	dir, err := os.MkdirTemp("", "snoop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "snoop")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(setpriv, "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--", exe, "-for", d.String())
	cmd.Dir = "/"
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var evs []snoopEvent
	wait := func() []snoopEvent {
		once.Do(func() {
			_ = cmd.Wait()
			sc := bufio.NewScanner(&out)
			for sc.Scan() {
				var e snoopEvent
				if json.Unmarshal(sc.Bytes(), &e) == nil {
					evs = append(evs, e)
				}
			}
		})
		return evs
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); wait() })
	time.Sleep(300 * time.Millisecond) // let it poll once
	return wait
}

// fakeXDGOpen puts an xdg-open on PATH that stands for the desktop's: it
// keeps its argument on its command line for a few seconds, as a browser
// started with it does, and hands the argument to the test's browser,
// which loads it after a second (a real browser takes that long to come
// up, and the attacker gets its chance).
func fakeXDGOpen(t *testing.T, b *browser) {
	t.Helper()
	dir := t.TempDir()
	rec := filepath.Join(dir, "opened")
	script := "#!/bin/sh\nprintf '%s\\n' \"$1\" >> " + rec + "\nsleep 4\n"
	if err := os.WriteFile(filepath.Join(dir, "xdg-open"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		done := 0
		for ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			data, _ := os.ReadFile(rec)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if strings.TrimSpace(string(data)) == "" || len(lines) <= done {
				continue
			}
			for _, arg := range lines[done:] {
				time.Sleep(time.Second)
				target := arg
				if strings.HasPrefix(arg, "/") {
					target = "file://" + arg
				}
				if err := b.navigate(ctx, target); err != nil && ctx.Err() == nil {
					t.Errorf("browser: opening %s: %v", arg, err)
				}
			}
			done = len(lines)
		}
	}()
}

// TestOtherUserCannotUseCeremony is the attack of another local user on
// the passkey page, end to end: a program run as nobody polls every
// command line in /proc while the user enrolls a passkey and steps up
// with it, and uses any page address it finds at once (loads the page,
// posts junk answers, which used to count against the user's limit).
//
// At enrollment the address leaks through the user's own browser's
// command line (the user clicked the address stepupctl printed): the
// attacker learns it but every request it makes is refused, and the
// user's enrollment goes through. At the step-up the agent opens the page
// itself: the attacker learns nothing (no address on any command line,
// the launcher file is the user's alone) and the user's step-up goes
// through with no failure counted.
func TestOtherUserCannotUseCeremony(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	b := newBrowser(t)
	runtimeDir(t)
	fakeXDGOpen(t, b)
	snoop := startSnoop(t, 25*time.Second)
	log, logs := testLogger()
	m := New(Config{Deps: method.Deps{Logger: log}})
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Enrollment: the user's browser is started with the address.
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{Label: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	enrollURL := res.(*api.PasskeyCeremony).URL
	leak := exec.Command("sh", "-c", "sleep 4", "user-browser", enrollURL)
	if err := leak.Start(); err != nil {
		t.Fatal(err)
	}
	defer leak.Wait()
	go func() {
		time.Sleep(1500 * time.Millisecond)
		if err := b.navigate(ctx, enrollURL); err != nil {
			t.Errorf("navigate: %v", err)
		}
	}()
	cred, err := m.EnrollFinish(ctx, st, json.RawMessage(`{}`))
	if err != nil {
		t.Fatalf("the user's enrollment failed while another user watched: %v", err)
	}
	if b.pageResult(t) != "ok" {
		t.Fatal("the enrollment page did not show success")
	}
	cred.ID = "pk1"

	// Step-up through the page the agent opens (the prompt's path).
	st, _, err = m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	if a := m.Ask(st); strings.Contains(a.Hint, st.(*ceremony).token) {
		t.Fatalf("the prompt's text (a zenity command line) carries the page's address: %q", a.Hint)
	}
	wctx := method.WithPromptEnv(ctx, envForPrompt())
	resp, err := m.Wait(wctx, st)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, resp); err != nil {
		t.Fatalf("the user's step-up failed while another user watched: %v", err)
	}
	if b.pageResult(t) != "ok" {
		t.Fatal("the step-up page did not show success")
	}
	if n := len(logs.FilterMessage("passkey assertion refused").All()) + len(logs.FilterMessage("passkey enrollment refused").All()); n != 0 {
		t.Fatalf("%d answers were refused: another user's answers reached the check", n)
	}

	cancel()
	_ = leak.Process.Kill()
	evs := snoop()
	var sawEnroll, sawLauncher bool
	for _, e := range evs {
		t.Logf("attacker: %+v", e)
		switch {
		case e.Event == "url" && e.URL == enrollURL:
			sawEnroll = true
		case e.Event == "url":
			t.Errorf("another user learned a page address: %s", e.URL)
		case e.Event == "read" && e.Err == "":
			t.Errorf("another user read %s", e.Path)
		case e.Event == "read" && strings.Contains(e.Path, "/stepup-passkey-"):
			sawLauncher = true
		case (e.Event == "get" || e.Event == "post") && e.Err == "" && e.Status != 403:
			t.Errorf("another user's %s got %d, want 403", e.Event, e.Status)
		}
	}
	if !sawLauncher {
		t.Error("the attacker never saw the launcher xdg-open was run with: the test proves nothing")
	}
	if !sawEnroll {
		t.Error("the attacker never saw the address the user's browser was started with: the test proves nothing")
	}
}

// envForPrompt is the environment the agent's prompt hands the method.
func envForPrompt() api.PromptEnv { return api.PromptEnv{Display: os.Getenv("DISPLAY")} }

// TestE2EOtherUserPromptPath is the attack on the real agent's prompt
// path: stepup-agent with --prompter zenity (real zenity on Xvfb) steps
// the user up with the passkey through promptStepUpAuth; the agent shows
// zenity (its text is on zenity's command line) and runs xdg-open. A
// program run as nobody polls every command line meanwhile: it sees the
// launcher's path in both, cannot read the launcher, learns no page
// address, and the user's step-up goes through.
func TestE2EOtherUserPromptPath(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	testenv.Program(t, "zenity")
	display := testenv.XDisplay(t)
	b := newBrowser(t)
	fakeXDGOpen(t, b)
	a := stepuptest.Start(t, stepuptest.Options{Prompter: "zenity"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Enroll on the custom-UI path (the test's browser loads the address).
	res, err := a.Client.EnrollStart(ctx, api.EnrollStartParams{Method: api.Passkey, Label: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.navigate(ctx, res.URL) }()
	if _, err := a.Client.EnrollFinish(ctx, res.EnrollmentID, map[string]any{}); err != nil {
		t.Fatalf("enrollFinish: %v\n%s", err, a.Log())
	}
	_ = b.pageResult(t)

	snoop := startSnoop(t, 20*time.Second)
	c := &stepup.Client{Socket: a.Socket, Env: &api.PromptEnv{Display: display}}
	defer c.Close()
	tok, err := c.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: []string{"wallet:export"}, Method: api.Passkey, Reason: "export"})
	if err != nil {
		t.Fatalf("promptStepUpAuth while another user watched: %v\n%s", err, a.Log())
	}
	if _, err := a.Client.VerifyToken(ctx, tok.Token, "wallet:export", false); err != nil {
		t.Fatalf("verifyToken: %v", err)
	}
	evs := snoop()
	var sawZenity, sawOpener bool
	for _, e := range evs {
		switch {
		case e.Event == "saw" && strings.HasPrefix(e.Path, "--text="):
			sawZenity = true
			t.Logf("zenity's text, as another user reads it: %q", e.Path)
		case e.Event == "saw":
			sawOpener = true
		case e.Event == "url":
			t.Errorf("another user learned a page address: %s", e.URL)
		case e.Event == "read" && e.Err == "":
			t.Errorf("another user read %s", e.Path)
		case e.Event == "get" || e.Event == "post":
			t.Errorf("another user's %s: %+v", e.Event, e)
		}
	}
	if !sawZenity || !sawOpener {
		t.Errorf("the attacker did not see zenity's text (%v) or xdg-open's argument (%v): the test proves nothing", sawZenity, sawOpener)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopX() // the Xvfb of the zenity test, if it started one
	os.Exit(code)
}
