package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// An X display of the test binary's own. Each package's test binary
// starts its own Xvfb rather than share one across the packages go test
// runs side by side: a pinentry-gtk-2 of one package grabs the keyboard,
// and xdotool keys of another would reach it. -noreset keeps the server
// from resetting (and refusing connections for a moment) each time its
// last client leaves; -displayfd lets Xvfb pick a free display number
// and say when it is ready.
var (
	xOnce sync.Once
	xCmd  *exec.Cmd
	xDisp string
	xErr  error
)

// XDisplay returns the test binary's X display (":N"), starting Xvfb the
// first time; a missing Xvfb fails the test in CI and skips it elsewhere.
// StopX, from TestMain, stops it.
func XDisplay(t testing.TB) string {
	t.Helper()
	xvfb := Program(t, "Xvfb")
	xOnce.Do(func() { xDisp, xCmd, xErr = startX(xvfb) })
	if xErr != nil {
		t.Fatalf("starting an X display (Xvfb): %v", xErr)
	}
	return xDisp
}

// StopX stops the Xvfb XDisplay started, if it did.
func StopX() {
	if xCmd != nil {
		_ = xCmd.Process.Signal(syscall.SIGTERM)
		_ = xCmd.Wait()
	}
}

func startX(xvfb string) (string, *exec.Cmd, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", nil, err
	}
	defer r.Close()
	cmd := exec.Command(xvfb, "-displayfd", "3", "-noreset", "-nolisten", "tcp", "-screen", "0", "1280x800x24")
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		w.Close()
		return "", nil, err
	}
	w.Close()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case n := <-line:
		if n == "" {
			cmd.Process.Kill()
			cmd.Wait()
			return "", nil, fmt.Errorf("Xvfb exited before it named its display")
		}
		return ":" + n, cmd, nil
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return "", nil, fmt.Errorf("Xvfb did not name its display within 20s")
	}
}
