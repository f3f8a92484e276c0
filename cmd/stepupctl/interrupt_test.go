package main

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/ctl"
)

// Ctrl-C while `stepupctl verify -` waits for a token on its standard
// input ends it at once with exit 3 and "interrupted", not when the
// input ends; so it does for `check` (a quick verb, which takes the
// signal itself after its first 25 ms) waiting on an agent that never
// answers.
func TestInterrupt(t *testing.T) {
	// An agent that accepts and never answers.
	mute := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, args := range [][]string{{"verify", "-", "--scope", "wallet:export"}, {"check", "wallet:export"}} {
		cmd := exec.Command(filepath.Join(binDir, "stepupctl"), args...)
		cmd.Env = append(cmd.Environ(), "STEPUP_AUTH_SOCK="+mute)
		w, err := cmd.StdinPipe() // never written, never closed until the end
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: still waiting for standard input 10 s after SIGINT", args)
		}
		if code := cmd.ProcessState.ExitCode(); code != ctl.ExitCancelled || !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and \"interrupted\"", args, code, stderr.String(), ctl.ExitCancelled)
		}
	}
}
