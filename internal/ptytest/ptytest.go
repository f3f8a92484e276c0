// Package ptytest runs a command on a pseudo-terminal for tests, as a
// person at a terminal would: what it prints is collected, Expect waits
// for a pattern, Write types.
package ptytest

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Screen collects everything a terminal's controlling side reads.
type Screen struct {
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// Collect reads f until it fails (the terminal closed) into a Screen.
func Collect(f *os.File) *Screen {
	s := &Screen{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// String is everything read so far.
func (s *Screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Done is closed when reading has ended.
func (s *Screen) Done() <-chan struct{} { return s.done }

// Session is a command running on a pseudo-terminal.
type Session struct {
	t      testing.TB
	F      *os.File // the terminal's controlling side
	Cmd    *exec.Cmd
	screen *Screen
}

// Start starts cmd on a new 120x60 terminal; the test's end kills it.
func Start(t testing.TB, cmd *exec.Cmd) *Session {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 60, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{t: t, F: f, Cmd: cmd, screen: Collect(f)}
	t.Cleanup(func() { cmd.Process.Kill(); f.Close() })
	return s
}

// Expect waits up to 10 seconds until the screen matches re and returns
// the submatches; it fails the test otherwise.
func (s *Session) Expect(re string) []string {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(s.Screen()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("screen never matched %q; it shows:\n%s", re, s.Screen())
	return nil
}

// Write types text.
func (s *Session) Write(text string) {
	s.t.Helper()
	if _, err := s.F.Write([]byte(text)); err != nil {
		s.t.Fatal(err)
	}
}

// Screen is everything printed so far.
func (s *Session) Screen() string { return s.screen.String() }

// Wait waits up to 10 seconds for the command to exit and returns its
// error; it fails the test when the command does not exit.
func (s *Session) Wait() error {
	s.t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		s.t.Fatalf("%s did not exit; screen:\n%s", s.Cmd.Path, s.Screen())
		return nil
	}
}

// AnswerSecret types secret and Enter, waits until the screen matches
// want after it and the command has exited 0, and fails the test if the
// secret shows on the screen (it was echoed).
func (s *Session) AnswerSecret(secret, want string) {
	s.t.Helper()
	s.Write(secret + "\n")
	s.Expect(want)
	if err := s.Wait(); err != nil {
		s.t.Fatalf("%s: %v\n%s", s.Cmd.Path, err, s.Screen())
	}
	if strings.Contains(s.Screen(), secret) {
		s.t.Fatalf("the answer was echoed:\n%s", s.Screen())
	}
}
