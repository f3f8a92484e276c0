//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stepup-agent/stepup-agent/internal/keyringtest"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// TestKeychainRestart runs testdata/keychain/*.txtar once per persistent
// backend: state made before a kill -9 of the agent (tokens, a consumed
// token, used TOTP codes, a lockout, the signing key) must be there after
// it starts again (docs/keychain.md). For secretservice each script gets
// its own dbus-daemon and gnome-keyring.
func TestKeychainRestart(t *testing.T) {
	for _, p := range []string{"oathtool"} {
		requireProgram(t, p)
	}
	for _, backend := range []string{"file", "secretservice"} {
		t.Run(backend, func(t *testing.T) {
			if backend == "secretservice" {
				for _, p := range []string{"dbus-daemon", "gnome-keyring-daemon", "secret-tool"} {
					requireProgram(t, p)
				}
			}
			testscript.Run(t, testscript.Params{
				Dir:                 "testdata/keychain",
				RequireExplicitExec: true,
				Setup: func(e *testscript.Env) error {
					if err := setupScriptEnv(e); err != nil {
						return err
					}
					e.Setenv("BACKEND", backend)
					if backend == "secretservice" {
						addr, err := startTestKeyring(e)
						if err != nil {
							return err
						}
						e.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
					}
					return nil
				},
				Condition: func(cond string) (bool, error) {
					switch cond {
					case "file", "secretservice":
						return cond == backend, nil
					}
					return false, fmt.Errorf("unknown condition %q", cond)
				},
				Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
					"kagent":     cmdKAgent,
					"keyring":    cmdKeyring,
					"until":      cmdUntil,
					"envfrom":    cmdEnvFrom,
					"sleep":      cmdSleep,
					"mode":       cmdMode,
					"totpwindow": cmdTOTPWindow,
				},
			})
		})
	}
}

// startTestKeyring starts a private session bus (no .service files) and a
// gnome-keyring unlocked with a password on it (internal/keyringtest),
// stopped when the script ends, and returns the bus address.
func startTestKeyring(e *testscript.Env) (string, error) {
	k, err := keyringtest.Start(func(addr string) error {
		// The backend finds the bus through the environment.
		old := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
		defer os.Setenv("DBUS_SESSION_BUS_ADDRESS", old)
		os.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
		s, err := keychain.OpenSecretService(context.Background(), keychain.Options{Timeout: time.Second})
		if err == nil {
			s.Close()
		}
		return err
	})
	if err != nil {
		return "", err
	}
	keyrings.Store(e.WorkDir, k)
	e.Defer(func() { k.Close(); keyrings.Delete(e.WorkDir) })
	return k.Addr, nil
}

var keyrings sync.Map // $WORK -> *keyringtest.Keyring

// keyring kill | start | stop | cont: kill -9 the script's gnome-keyring,
// start it again (over the same keyring file, unlocked), freeze it with
// SIGSTOP, thaw it with SIGCONT.
func cmdKeyring(ts *testscript.TestScript, neg bool, args []string) {
	v, ok := keyrings.Load(ts.Getenv("WORK"))
	if !ok || len(args) != 1 {
		ts.Fatalf("usage: keyring kill|start|stop|cont (secretservice scripts only)")
	}
	k := v.(*keyringtest.Keyring)
	switch args[0] {
	case "kill":
		k.Kill()
	case "start":
		ts.Check(k.StartDaemon())
	case "stop", "cont":
		ts.Check(k.Signal(map[string]syscall.Signal{"stop": syscall.SIGSTOP, "cont": syscall.SIGCONT}[args[0]]))
	default:
		ts.Fatalf("unknown keyring command %q", args[0])
	}
}

// until D REGEXP CMD ARGS...: run CMD until its stdout matches REGEXP,
// for at most D; its last output is the script's stdout and stderr.
func cmdUntil(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 3 {
		ts.Fatalf("usage: until D REGEXP CMD ARGS...")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	deadline := time.Now().Add(d)
	for {
		ts.Exec(args[2], args[3:]...)
		if re.MatchString(ts.ReadFile("stdout")) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("until %s: %v never printed %q; last:\n%s", d, args[2:], args[1], ts.ReadFile("stdout"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var kagents sync.Map // *testscript.TestScript -> *exec.Cmd

// kagent start [ARGS...] | kill9
//
// start runs stepup-agent -D on $SOCK with --keychain $BACKEND, no
// prompter, $WORK/policy.yaml and $WORK/audit.jsonl, logging to
// $WORK/agent.log, with the script's D-Bus session bus; kill9 kills it
// with SIGKILL, as a crash would.
func cmdKAgent(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: kagent start|kill9")
	}
	switch args[0] {
	case "start":
		if _, ok := kagents.Load(ts); ok {
			ts.Fatalf("an agent is already running")
		}
		work := ts.Getenv("WORK")
		argv := []string{"-D", "-a", ts.Getenv("SOCK"), "--keychain", ts.Getenv("BACKEND"), "--prompter", "none",
			"--policy", filepath.Join(work, "policy.yaml"), "--audit", filepath.Join(work, "audit.jsonl")}
		argv = append(argv, args[1:]...)
		logf, err := os.OpenFile(filepath.Join(work, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		ts.Check(err)
		c := exec.Command(filepath.Join(binDir, "stepup-agent"), argv...)
		c.Dir = work
		c.Env = append(scriptEnv(ts), "DBUS_SESSION_BUS_ADDRESS="+ts.Getenv("DBUS_SESSION_BUS_ADDRESS"))
		c.Stdout, c.Stderr = logf, logf
		ts.Check(c.Start())
		logf.Close()
		kagents.Store(ts, c)
		ts.Defer(func() {
			if _, ok := kagents.LoadAndDelete(ts); ok {
				c.Process.Kill()
				c.Wait()
			}
		})
		if err := waitSock(ts.Getenv("SOCK"), 10*time.Second); err != nil {
			ts.Fatalf("agent did not start: %v\n%s", err, ts.ReadFile(filepath.Join(work, "agent.log")))
		}
	case "kill9":
		v, ok := kagents.LoadAndDelete(ts)
		if !ok {
			ts.Fatalf("no agent running")
		}
		c := v.(*exec.Cmd)
		ts.Check(c.Process.Signal(syscall.SIGKILL))
		c.Wait()
	default:
		ts.Fatalf("unknown kagent command %q", args[0])
	}
}
