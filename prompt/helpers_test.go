package prompt

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/ptytest"
	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/creack/pty"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "save screenshots of the GUI prompts into docs/img")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	testenv.StopX()
	os.Exit(code)
}

// strict: a missing prerequisite fails the test in CI, skips it elsewhere.
func strict() bool {
	return testenv.Strict()
}

func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, format, args...)
}

// requireProgram returns the program's path or skips (fails in CI).
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	return testenv.Program(t, name)
}

// testDisplay returns the test binary's own X display (testenv.XDisplay).
func testDisplay(t *testing.T) string {
	t.Helper()
	return testenv.XDisplay(t)
}

// term is a pseudo-terminal standing in for the requester's terminal:
// the test reads what the prompt shows on it and types into it.
type term struct {
	t      *testing.T
	master *os.File
	slave  *os.File
	screen *ptytest.Screen
}

func newTerm(t *testing.T) *term {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		missing(t, "a pseudo-terminal: %v", err)
	}
	pty.Setsize(m, &pty.Winsize{Rows: 24, Cols: 80})
	tm := &term{t: t, master: m, slave: s, screen: ptytest.Collect(m)}
	t.Cleanup(func() {
		s.Close()
		m.Close()
		<-tm.screen.Done()
	})
	return tm
}

func (tm *term) name() string { return tm.slave.Name() }

func (tm *term) output() string { return tm.screen.String() }

// waitFor waits until the terminal has shown want.
func (tm *term) waitFor(want string, d time.Duration) {
	tm.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(tm.output(), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tm.t.Fatalf("terminal never showed %q; it shows:\n%q", want, tm.output())
}

func (tm *term) typeText(s string) {
	tm.t.Helper()
	if _, err := tm.master.Write([]byte(s)); err != nil {
		tm.t.Fatal(err)
	}
}

// cooked reports whether the terminal is back in line mode with echo.
func (tm *term) cooked() bool {
	st, err := unix.IoctlGetTermios(int(tm.slave.Fd()), ioctlGetTermios)
	if err != nil {
		tm.t.Fatal(err)
	}
	return st.Lflag&unix.ICANON != 0 && st.Lflag&unix.ECHO != 0
}

// children lists this process's child processes whose name starts with
// prefix, by /proc.
func children(t *testing.T, prefix string) []int {
	t.Helper()
	return testenv.Children(os.Getpid(), prefix, true)
}

// waitChild waits for one child named prefix to appear and returns its pid.
func waitChild(t *testing.T, prefix string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p := children(t, prefix); len(p) > 0 {
			return p[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s process appeared", prefix)
	return 0
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// testPinentry is a prompter for a real pinentry program on target t.
func testPinentry(t *testing.T, program string, tgt target) *pinentry {
	return &pinentry{driver: "terminal", program: requireProgram(t, program), t: tgt, log: zaptest.NewLogger(t)}
}

// x runs an X client (xdotool, import) on display d with a deadline.
func x(t *testing.T, d string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireProgram(t, name), args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+d)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
