package password

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// copyExe copies an executable into dir (mode 0755), so another user can
// run it: go's build directories are private to root.
func copyExe(t *testing.T, src, dir string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestE2EPassword runs the real agent, built without cgo, with the real
// helper installed beside it, as a throw-away user (so PAM takes
// the unprivileged path, through unix_chkpwd, as it does for every real
// user) and a client as the same user (the agent serves its own uid
// only): isStepUpRequired offers password; a wrong password gets 4002 and
// the right one a token, through startVerification/completeVerification.
func TestE2EPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	name, password := testUser(t)
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}

	bin, err := os.MkdirTemp("", "stepup-pw-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	os.Chmod(bin, 0o755)
	// The daemon as README builds it, without cgo, and the helper next
	// to it, where the agent looks for it.
	agentExe := copyExe(t, staticAgent(t), bin)
	copyExe(t, realHelper(t), bin)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	clientExe := copyExe(t, self, bin)

	home, err := os.MkdirTemp("", "stepup-pw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o700)
	os.Chmod(filepath.Dir(home), 0o1777) // /tmp: already so
	sock := filepath.Join(home, "agent.sock")
	env := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"XDG_STATE_HOME=" + filepath.Join(home, "state"),
		"XDG_RUNTIME_DIR=" + home,
		"STEPUP_PAM_SERVICE=" + testService,
	}
	agentLog := &lockedBuffer{}
	agent := exec.Command(agentExe, "-D", "-a", sock, "--keychain", "memory", "--prompter", "none",
		"--policy", filepath.Join(home, "policy.yaml"), "--audit", filepath.Join(home, "audit.jsonl"))
	agent.Env = env
	agent.Stderr, agent.Stdout = agentLog, agentLog
	agent.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { agent.Wait(); close(done) }()
	t.Cleanup(func() {
		agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			agent.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("stepup-agent exited:\n%s", agentLog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket:\n%s", agentLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := exec.CommandContext(ctx, clientExe, "-test.run=^TestE2EPasswordClient$", "-test.v")
	client.Env = append(env, "STEPUP_PW_CLIENT="+sock, "STEPUP_PW_RIGHT="+password, "STEPUP_PW_AGENT="+strconv.Itoa(agent.Process.Pid))
	client.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := client.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestE2EPasswordClient") {
		t.Fatalf("client as %s: %v\n%s\nagent:\n%s", name, err, out, agentLog.String())
	}
	if strings.Contains(agentLog.String(), password) {
		t.Fatal("the password is in the agent's log")
	}
}

type lockedBuffer = testenv.LockedBuffer

// TestE2EPasswordClient is TestE2EPassword's client, run as the test
// user; it does nothing on its own.
func TestE2EPasswordClient(t *testing.T) {
	sock := os.Getenv("STEPUP_PW_CLIENT")
	if sock == "" {
		t.Skip("the client half of TestE2EPassword")
	}
	password := os.Getenv("STEPUP_PW_RIGHT")
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	c := &stepup.Client{Socket: sock, Env: &api.PromptEnv{}}
	defer c.Close()
	req, err := c.CheckStepUp(ctx, "wallet:export")
	if err != nil {
		t.Fatal(err)
	}
	if !req.Required || !strings.Contains(fmt.Sprint(req.Methods), api.Password) {
		t.Fatalf("isStepUpRequired %+v: password not offered", req)
	}
	ch, err := c.StartVerification(ctx, api.Password, []string{"wallet:export"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"password": password + "-wrong"}); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	ch, err = c.StartVerification(ctx, api.Password, []string{"wallet:export"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"password": password})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	claims, err := c.VerifyToken(ctx, tok.Token, "wallet:export", true)
	if err != nil || !strings.Contains(strings.Join(claims.AMR, " "), "pwd") {
		t.Fatalf("verifyToken %+v: %v", claims, err)
	}

	// A client that hangs up while PAM sleeps on a wrong password: the
	// agent kills the helper; no helper process is left.
	agentPid, _ := strconv.Atoi(os.Getenv("STEPUP_PW_AGENT"))
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	fmt.Fprintf(conn, `{"jsonrpc":"2.0","id":1,"method":"startVerification","params":{"method":"password","requestedScopes":["wallet:export"]}}`+"\n")
	line, err := r.ReadString('\n')
	var start struct {
		Result struct {
			ChallengeID string `json:"challengeId"`
		} `json:"result"`
	}
	if err != nil || json.Unmarshal([]byte(line), &start) != nil || start.Result.ChallengeID == "" {
		t.Fatalf("startVerification: %q %v", line, err)
	}
	fmt.Fprintf(conn, `{"jsonrpc":"2.0","id":2,"method":"completeVerification","params":{"challengeId":%q,"response":{"password":"wrong-and-abandoned"}}}`+"\n", start.Result.ChallengeID)
	helpers := func() []int { return testenv.Children(agentPid, "stepup-pam-help", false) }
	deadline := time.Now().Add(20 * time.Second)
	for len(helpers()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the agent started no helper for the check")
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn.Close()
	hungUp := time.Now()
	for len(helpers()) > 0 {
		if time.Since(hungUp) > 10*time.Second {
			t.Fatalf("helper %v still runs after the client hung up", helpers())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the helper was gone %v after the hang-up", time.Since(hungUp))
	// The agent is still up and answers.
	if _, err := c.CheckStepUp(ctx, "wallet:export"); err != nil {
		t.Fatalf("after the hang-up: %v", err)
	}
}

// staticAgent builds stepup-agent the way README's run command does,
// without cgo, once per test binary.
func staticAgent(t *testing.T) string {
	t.Helper()
	helperMu.Lock()
	defer helperMu.Unlock()
	if staticAgentPath != "" {
		return staticAgentPath
	}
	dir, err := os.MkdirTemp(sharedBin(t), "static")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	p, err := goBuild(t, "./cmd/stepup-agent", dir, false)
	if err != nil {
		t.Fatal(err)
	}
	staticAgentPath = p
	return p
}

var staticAgentPath string

// TestDaemonIsStatic: built with CGO_ENABLED=0 the daemon is a static
// binary (no dynamic loader, no libc, no libpam), as `file` and `ldd` say.
func TestDaemonIsStatic(t *testing.T) {
	exe := staticAgent(t)
	fileProg := testenv.Program(t, "file")
	lddProg := testenv.Program(t, "ldd")
	out, err := exec.Command(fileProg, "-b", exe).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "statically linked") {
		t.Fatalf("file %s: %v: %s", exe, err, out)
	}
	out, _ = exec.Command(lddProg, exe).CombinedOutput()
	if !strings.Contains(string(out), "not a dynamic executable") {
		t.Fatalf("ldd %s: %s", exe, out)
	}
}

// TestE2EWithoutHelper: the daemon alone (README's run command on a
// machine without libpam0g-dev) starts, does not offer password, and its
// log says why and what to install.
func TestE2EWithoutHelper(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := t.TempDir()
	agentExe := copyExe(t, staticAgent(t), dir)
	sock := filepath.Join(dir, "agent.sock")
	agentLog := &lockedBuffer{}
	agent := exec.Command(agentExe, "-D", "-a", sock, "--keychain", "memory", "--prompter", "none",
		"--policy", filepath.Join(dir, "policy.yaml"), "--audit", filepath.Join(dir, "audit.jsonl"))
	agent.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "XDG_RUNTIME_DIR=" + dir,
		"XDG_STATE_HOME=" + filepath.Join(dir, "state"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	agent.Stderr, agent.Stdout = agentLog, agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &stepup.Client{Socket: sock, Env: &api.PromptEnv{}}
	defer c.Close()
	var req *stepup.StepUpRequired
	var err error
	for req == nil {
		if req, err = c.CheckStepUp(ctx, "wallet:export"); err != nil {
			req = nil
			if ctx.Err() != nil {
				t.Fatalf("no agent: %v\n%s", err, agentLog.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if strings.Contains(fmt.Sprint(req.Methods), api.Password) {
		t.Fatalf("password offered without its helper: %+v", req)
	}
	if _, err := c.StartVerification(ctx, api.Password, []string{"wallet:export"}); err == nil {
		t.Fatal("a password verification started without the helper")
	} else {
		t.Logf("startVerification password without the helper: %v", err)
	}
	log := agentLog.String()
	if !strings.Contains(log, "password method unavailable") || !strings.Contains(log, filepath.Join(dir, HelperName)) || !strings.Contains(log, "libpam0g-dev") {
		t.Fatalf("the agent's log does not say why password is unavailable:\n%s", log)
	}
}
