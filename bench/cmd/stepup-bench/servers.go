//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one process under test, started (and stopped) by the harness.
type server struct {
	name  string
	sock  string
	pid   int
	proto *proto
	stop  func()
}

// env is the environment of everything the harness starts: the caller's,
// with the XDG directories moved into the run's temporary directory so
// that no real policy, keychain or audit log is touched.
func benchEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "STEPUP_AUTH_SOCK", "SSH_AUTH_SOCK", "GNUPGHOME", "GOGC", "GOMEMLIMIT", "GODEBUG":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
	)
}

// waitDial waits until path accepts connections.
func waitDial(ctx context.Context, path string) error {
	for {
		c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no server answers: %w", path, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// startChild starts a server that stays our child, and stops it with
// SIGTERM (then SIGKILL after a few seconds), by its pid.
func startChild(ctx context.Context, name, sock string, p *proto, env []string, logPath string, argv ...string) (*server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	s := &server{name: name, sock: sock, pid: cmd.Process.Pid, proto: p}
	s.stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := waitDial(wctx, sock); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w (log: %s)", name, err, logPath)
	}
	if err := p.probe(sock); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: probe: %w", name, err)
	}
	return s, nil
}

func startAgent(ctx context.Context, bin, dir, name, keychainBackend string, env []string) (*server, error) {
	sock := filepath.Join(dir, name+".sock")
	return startChild(ctx, name, sock, &protoAgent, env, filepath.Join(dir, name+".log"),
		bin, "-D", "-a", sock, "--keychain", keychainBackend, "--prompter", "none",
		"--audit", filepath.Join(dir, name+"-audit.jsonl"))
}

func startEcho(ctx context.Context, bin, dir string, env []string) (*server, error) {
	sock := filepath.Join(dir, "echo.sock")
	return startChild(ctx, "echo (C, floor)", sock, &protoEcho, env, filepath.Join(dir, "echo.log"), bin, sock)
}

// startSSHAgent starts ssh-agent in the foreground and loads one ed25519
// key, as a user's agent would hold.
func startSSHAgent(ctx context.Context, dir string, env []string) (*server, error) {
	sock := filepath.Join(dir, "ssh-agent.sock")
	s, err := startChild(ctx, "ssh-agent", sock, &protoSSH, env, filepath.Join(dir, "ssh-agent.log"), "ssh-agent", "-D", "-a", sock)
	if err != nil {
		return nil, err
	}
	key := filepath.Join(dir, "id_ed25519")
	kctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, argv := range [][]string{
		{"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", key},
		{"ssh-add", "-q", key},
	} {
		cmd := exec.CommandContext(kctx, argv[0], argv[1:]...)
		cmd.Env = append(env, "SSH_AUTH_SOCK="+sock)
		if out, err := cmd.CombinedOutput(); err != nil {
			s.stop()
			return nil, fmt.Errorf("%s: %v: %s", argv[0], err, out)
		}
	}
	return s, nil
}

// startGPGAgent starts gpg-agent with a GNUPGHOME of its own. gpg-agent
// --daemon forks even with --no-detach, so its pid comes from Assuan
// "GETINFO pid" and it is stopped with gpgconf --kill (KILLAGENT), then
// SIGKILL by that pid if it lingers.
func startGPGAgent(ctx context.Context, dir string, env []string) (*server, error) {
	home := filepath.Join(dir, "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		return nil, err
	}
	env = append(env, "GNUPGHOME="+home)
	run := func(argv ...string) (string, error) {
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(c, argv[0], argv[1:]...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("%s: %v: %s", argv[0], err, ee.Stderr)
			}
			return "", fmt.Errorf("%s: %v", argv[0], err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	sock, err := run("gpgconf", "--homedir", home, "--list-dirs", "agent-socket")
	if err != nil {
		return nil, err
	}
	if _, err := run("gpg-agent", "--homedir", home, "--daemon", "--quiet"); err != nil {
		return nil, err
	}
	pid, err := gpgAgentPID(sock)
	if err != nil {
		run("gpgconf", "--homedir", home, "--kill", "gpg-agent")
		return nil, err
	}
	s := &server{name: "gpg-agent", sock: sock, pid: pid, proto: &protoGPG}
	s.stop = func() {
		run("gpgconf", "--homedir", home, "--kill", "gpg-agent")
		for i := 0; i < 50; i++ {
			if syscall.Kill(pid, 0) != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := s.proto.probe(sock); err != nil {
		s.stop()
		return nil, fmt.Errorf("gpg-agent: probe: %w", err)
	}
	return s, nil
}

func gpgAgentPID(sock string) (int, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return 0, fmt.Errorf("gpg-agent: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return 0, err
	}
	fmt.Fprint(c, "GETINFO pid\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("gpg-agent: GETINFO pid: %w", err)
		}
		if rest, ok := strings.CutPrefix(line, "D "); ok {
			return strconv.Atoi(strings.TrimSpace(rest))
		}
		if strings.HasPrefix(line, "ERR") || strings.HasPrefix(line, "OK") {
			return 0, fmt.Errorf("gpg-agent: GETINFO pid: %q", line)
		}
	}
}
