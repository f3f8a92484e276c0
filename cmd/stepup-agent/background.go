package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyFD is the descriptor on which a background child reports that it
// listens ("ok") or why it could not start.
const readyFD = 3

// background starts the agent as a detached child (ssh-agent forks; Go
// re-executes itself), waits until it listens, and prints the shell
// commands for eval.
func background(o *options, args []string, stdout, stderr io.Writer) int {
	if pid, ok := runningAgent(o.socket); ok {
		fmt.Fprintf(stderr, "stepup-agent: %v\n", alreadyRunning(o, pid))
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "stepup-agent: cannot find my own executable: %v\n", err)
		return 1
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "stepup-agent: %v\n", err)
		return 1
	}
	childArgs := append([]string{"-internal-child", "-a", o.socket}, args...)
	cmd := exec.Command(exe, childArgs...)
	cmd.Args[0] = os.Args[0]
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "stepup-agent: cannot start the agent: %v\n", err)
		return 1
	}
	pw.Close()
	pid := cmd.Process.Pid
	cmd.Process.Release()

	done := make(chan string, 1)
	go func() {
		// "ok", or why the child could not start (maybe several lines).
		msg, _ := io.ReadAll(io.LimitReader(pr, 64<<10))
		done <- strings.TrimSpace(string(msg))
	}()
	select {
	case msg := <-done:
		pr.Close()
		first, notes, _ := strings.Cut(msg, "\n")
		if first != "ok" {
			if msg == "" {
				msg = "the agent exited before it was ready"
			}
			fmt.Fprintf(stderr, "stepup-agent: %s\n", msg)
			return 1
		}
		for _, l := range strings.Split(notes, "\n") {
			if l != "" {
				fmt.Fprintf(stderr, "stepup-agent: %s\n", l)
			}
		}
	case <-time.After(30 * time.Second):
		fmt.Fprintf(stderr, "stepup-agent: the agent did not become ready within 30s (pid %d)\n", pid)
		return 1
	}
	fmt.Fprint(stdout, envLines(o, pid))
	return 0
}

// readyPipe returns the child's readiness pipe, or nil in the foreground.
func readyPipe(o *options) *os.File {
	if !o.child {
		return nil
	}
	return os.NewFile(readyFD, "ready")
}

// kill stops the agent named by STEPUP_AGENT_PID (-k).
func kill(o *options, stdout, stderr io.Writer) int {
	s := os.Getenv("STEPUP_AGENT_PID")
	if s == "" {
		fmt.Fprintln(stderr, "stepup-agent: STEPUP_AGENT_PID is not set, cannot kill the agent")
		fmt.Fprintln(stderr, "hint: run this in the shell that ran eval \"$(stepup-agent)\", or kill the agent by its pid")
		return 1
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 1 {
		fmt.Fprintf(stderr, "stepup-agent: STEPUP_AGENT_PID=%q is not a process id\n", s)
		return 1
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		fmt.Fprintf(stderr, "stepup-agent: cannot kill pid %d: %v\n", pid, err)
		return 1
	}
	if useCsh(o) {
		fmt.Fprintf(stdout, "unsetenv STEPUP_AUTH_SOCK;\nunsetenv STEPUP_AGENT_PID;\necho Agent pid %d killed;\n", pid)
	} else {
		fmt.Fprintf(stdout, "unset STEPUP_AUTH_SOCK;\nunset STEPUP_AGENT_PID;\necho Agent pid %d killed;\n", pid)
	}
	return 0
}
