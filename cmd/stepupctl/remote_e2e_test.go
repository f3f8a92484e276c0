//go:build linux

package main

// End to end through a real OpenSSH server on 127.0.0.1 (docs/remote.md):
// the workstation runs stepup-agent and `ssh -N -R` on a terminal; a
// program on the "server" uses the forwarded socket as its
// STEPUP_AUTH_SOCK; the prompt (pinentry-tty) opens on the terminal of
// the workstation's ssh, marked remote.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stepup-agent/stepup-agent/internal/sshtest"
)

type remoteWorld struct {
	*peAgent
	serverSock string
	sshOut     *ptyClient // the workstation's ssh, on its terminal
}

func startRemoteWorld(t *testing.T) *remoteWorld {
	t.Helper()
	for _, p := range []string{"oathtool", "pinentry-tty", "ssh", "sshd"} {
		requireProgram(t, p)
	}
	srv := sshtest.Start(t, "build-01")
	dir, err := os.MkdirTemp("", "rm") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o700)
	os.Mkdir(filepath.Join(dir, "srv"), 0o700)
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pol, []byte("scopes:\n  deploy:prod:\n    ttl: 5m\nremote:\n  scopes: [\"deploy:*\"]\n"), 0o600)
	a := &peAgent{t: t, dir: dir, sock: filepath.Join(run, "agent.sock"), log: filepath.Join(dir, "agent.log")}
	base := append(peBaseEnv(),
		"XDG_RUNTIME_DIR="+run,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"HOME="+dir,
	)
	a.env = append(append([]string{}, base...), "STEPUP_AUTH_SOCK="+a.sock)
	remoteSock := filepath.Join(run, "remote.sock")
	a.run(append(append([]string{}, base...), "STEPUP_PINENTRY_TTY=pinentry-tty"),
		func() string { return "\nsshd log:\n" + srv.Log() },
		"--remote-socket", remoteSock, "--policy", pol, "--keychain", "memory", "--prompter", "terminal")
	if err := waitSock(remoteSock, 5*time.Second); err != nil {
		t.Fatalf("the agent's remote socket: %v", err)
	}
	a.enroll()

	// The workstation's ssh, on a terminal of its own, forwarding the
	// remote socket to the server's socket path.
	w := &remoteWorld{peAgent: a, serverSock: filepath.Join(dir, "srv", "agent.sock")}
	ssh := exec.Command("ssh", "-F", srv.Config, "-N", "-R", w.serverSock+":"+remoteSock, "build-01")
	ssh.Env = append(peBaseEnv(), "TERM=xterm")
	w.sshOut = startPTYClient(t, ssh, 120)
	if err := waitSock(w.serverSock, 15*time.Second); err != nil {
		t.Fatalf("the forwarded socket never appeared on the server: %v\nsshd log:\n%s", err, srv.Log())
	}
	return w
}

// onServer runs stepupctl as a program on the server would: the forwarded
// socket as STEPUP_AUTH_SOCK, no terminal of its own.
func (w *remoteWorld) onServer(stdin string, args ...string) (stdout, stderr string, err error) {
	return w.onServerEnv(nil, stdin, args...)
}

func (w *remoteWorld) onServerEnv(env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(binDir, "stepupctl"), args...)
	c.Env = append(append(peBaseEnv(), "HOME="+w.dir, "STEPUP_AUTH_SOCK="+w.serverSock), env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	c.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err = c.Run()
	return o.String(), e.String(), err
}

type serverResult struct {
	out, errOut string
	err         error
}

func (w *remoteWorld) onServerAsync(args ...string) chan serverResult {
	return w.onServerAsyncEnv(nil, args...)
}

func (w *remoteWorld) onServerAsyncEnv(env []string, args ...string) chan serverResult {
	ch := make(chan serverResult, 1)
	go func() {
		o, e, err := w.onServerEnv(env, "", args...)
		ch <- serverResult{o, e, err}
	}()
	return ch
}

// rawOnServer sends one JSON-RPC line on the forwarded socket, as a
// program on the server would; the answer line comes on the channel.
func (w *remoteWorld) rawOnServer(t *testing.T, req string) chan serverResult {
	ch := make(chan serverResult, 1)
	c, err := net.Dial("unix", w.serverSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintln(c, req)
		line, err := bufio.NewReader(c).ReadString('\n')
		ch <- serverResult{out: line, err: err}
	}()
	return ch
}

// sshScreenSince is what the ssh terminal showed after mark.
func (w *remoteWorld) sshScreenSince(mark int) string {
	s := w.sshOut.screen()
	if mark > len(s) {
		return ""
	}
	return s[mark:]
}

func (w *remoteWorld) waitSSH(t *testing.T, mark int, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if s := w.sshScreenSince(mark); strings.Contains(s, want) {
			return s
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("the workstation's ssh terminal never showed %q:\n%s", want, w.sshScreenSince(mark))
	return ""
}

func TestRemoteE2E(t *testing.T) {
	w := startRemoteWorld(t)

	// A program on the server steps up; the prompt opens on the terminal
	// of the workstation's ssh, naming the connection, marked remote.
	mark := len(w.sshOut.screen())
	res := w.onServerAsync("prompt", "--json", "--reason", "ship it", "deploy:prod")
	screen := w.waitSSH(t, mark, "Code")
	for _, want := range []string{"Remote request through ssh build-01 (pid ", "a program on build-01 (via ssh", "deploy:prod", "ship it"} {
		if !strings.Contains(screen, want) {
			t.Fatalf("the prompt on the ssh terminal lacks %q:\n%s", want, screen)
		}
	}
	t.Logf("the workstation's ssh terminal shows:\n%s", screen)
	w.sshOut.master.Write([]byte(w.totp(0) + "\r"))
	var r serverResult
	select {
	case r = <-res:
	case <-time.After(40 * time.Second):
		t.Fatalf("stepupctl prompt on the server did not finish; ssh terminal:\n%s", w.sshScreenSince(mark))
	}
	if r.err != nil {
		t.Fatalf("stepupctl prompt on the server: %v\n%s%s\nssh terminal:\n%s", r.err, r.out, r.errOut, w.sshScreenSince(mark))
	}
	var tok struct {
		Token  string   `json:"token"`
		Scopes []string `json:"scopes"`
	}
	if err := json.Unmarshal([]byte(r.out), &tok); err != nil || !strings.HasPrefix(tok.Token, "eyJ") {
		t.Fatalf("prompt output: %v\n%s", err, r.out)
	}

	// The token works on the server: a relying party there verifies it,
	// and getToken through the forwarded socket hands it back.
	if o, e, err := w.onServer(tok.Token, "verify", "-", "--scope", "deploy:prod"); err != nil {
		t.Fatalf("stepupctl verify on the server: %v\n%s%s", err, o, e)
	}
	if o, e, err := w.onServer("", "token", "--json", "deploy:prod"); err != nil || !strings.Contains(o, tok.Token) {
		t.Fatalf("stepupctl token on the server: %v\n%s%s", err, o, e)
	}

	// stepupctl status on the server says the agent is a forwarded one.
	if o, e, err := w.onServer("", "status"); err != nil || !strings.Contains(o, "remote:      a forwarded agent, reached through ssh build-01 (pid ") {
		t.Fatalf("stepupctl status on the server: %v\n%s%s", err, o, e)
	}
	// stepupctl doctor on the server recognises the forwarded agent (it may
	// warn about other things the "server" lacks: only its remote line counts).
	if o, e, _ := w.onServer("", "doctor"); !strings.Contains(o, "is a forwarded agent (") {
		t.Fatalf("stepupctl doctor on the server does not recognise the forwarded agent:\n%s%s", o, e)
	}

	// Not handed to a local caller.
	c := exec.Command(filepath.Join(binDir, "stepupctl"), "token", "deploy:prod")
	c.Env = w.env
	if out, err := c.CombinedOutput(); err == nil || strings.Contains(string(out), tok.Token) {
		t.Fatalf("a local caller got the remotely stepped-up token: %v\n%s", err, out)
	}

	// Enroll through the remote socket is refused, saying why.
	if o, e, err := w.onServer("", "enroll", "totp", "--start", "--json"); err == nil || !strings.Contains(o+e, "may not enroll credentials") {
		t.Fatalf("enroll through the remote socket: %v\n%s%s", err, o, e)
	}
	// So is lock.
	if o, e, err := w.onServer("", "lock"); err == nil || !strings.Contains(o+e, "may not lock") {
		t.Fatalf("lock through the remote socket: %v\n%s%s", err, o, e)
	}

	// The remote policy denies what it does not list.
	if o, e, err := w.onServer("", "prompt", "wallet:export"); err == nil || !strings.Contains(o+e, "does not let remote callers use scope wallet:export") {
		t.Fatalf("a scope the remote policy leaves out: %v\n%s%s", err, o, e)
	}
	if strings.Contains(w.sshScreenSince(mark), "wallet:export") {
		t.Fatal("a prompt for a scope the remote policy denies was shown")
	}

	// The server side's own terminal and display are not where the
	// prompt goes: a remote caller naming a tty (its STEPUP_TTY) still
	// gets the prompt on the workstation's ssh terminal.
	srvTTY, srvTTYSlave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer srvTTY.Close()
	defer srvTTYSlave.Close()
	var srvScreen bytes.Buffer
	var srvMu sync.Mutex
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := srvTTY.Read(b)
			srvMu.Lock()
			srvScreen.Write(b[:n])
			srvMu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	// Prompt-bombing meets the cooldown: three prompts cancelled on the
	// workstation, then the fourth is refused without a prompt.
	for i := range 3 {
		mark = len(w.sshOut.screen())
		var env []string
		if i == 0 {
			env = []string{"STEPUP_TTY=" + srvTTYSlave.Name(), "TERM=xterm", "DISPLAY=:99"}
		}
		var res chan serverResult
		if i == 1 {
			res = w.rawOnServer(t, `{"jsonrpc":"2.0","id":1,"method":"promptStepUpAuth","params":{"requestedScopes":["deploy:prod"],"client":{"name":"deployctl","pid":31337,"host":"build-01"}}}`)
		} else {
			res = w.onServerAsyncEnv(env, "prompt", "deploy:prod")
		}
		screen := w.waitSSH(t, mark, "Code")
		if i == 1 && !strings.Contains(screen, "a program on build-01 (via ssh, pid 31337 there, says it is deployctl) asks to step up for deploy:prod") {
			t.Fatalf("the prompt does not show the remote program's claim as a claim:\n%s", screen)
		}
		if i == 0 {
			srvMu.Lock()
			got := srvScreen.String()
			srvMu.Unlock()
			if got != "" {
				t.Fatalf("the remote caller's own terminal showed something: %q", got)
			}
		}
		time.Sleep(200 * time.Millisecond)
		w.sshOut.master.Write([]byte{4}) // Ctrl-D cancels pinentry-tty
		select {
		case r = <-res:
		case <-time.After(30 * time.Second):
			t.Fatalf("cancelled prompt %d did not end:\n%s", i+1, w.sshScreenSince(mark))
		}
		if r.err == nil && !strings.Contains(r.out, `"error"`) {
			t.Fatalf("a cancelled prompt %d succeeded:\n%s", i+1, r.out)
		}
	}
	mark = len(w.sshOut.screen())
	o, e, err := w.onServer("", "prompt", "deploy:prod")
	if err == nil || !strings.Contains(o+e, "cancel") {
		t.Fatalf("the fourth prompt after three cancels: %v\n%s%s", err, o, e)
	}
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(w.sshScreenSince(mark), "deploy:prod") {
		t.Fatalf("a prompt was shown during the cooldown:\n%s", w.sshScreenSince(mark))
	}

	// Every remote request is in the audit log, naming the connection.
	f, err := os.Open(filepath.Join(w.dir, "state", "stepup", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct{ Event, Remote, Detail, Result string }
		json.Unmarshal(sc.Bytes(), &rec)
		if rec.Event == "remote_request" {
			n++
			if !strings.HasPrefix(rec.Remote, "ssh build-01 (pid ") {
				t.Fatalf("remote_request names %q", rec.Remote)
			}
		}
	}
	if n < 8 {
		t.Fatalf("%d remote_request records, want one per remote request", n)
	}
}
