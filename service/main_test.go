package service

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestMain lets the test binary serve as the program systemd-socket-activate
// starts: with STEPUP_SERVICE_TEST_CHILD set (passed with -E), it runs that
// child instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("STEPUP_SERVICE_TEST_CHILD") {
	case "":
		os.Exit(m.Run())
	case "serve":
		os.Exit(childServe())
	default:
		os.Exit(2)
	}
}

// childServe is the program under systemd-socket-activate: it takes the
// socket with Listener, notifies readiness, pings the watchdog, answers one
// connection and notifies STOPPING=1.
func childServe() int {
	log, _ := NewLogger(zap.DebugLevel)
	ln, ok, err := Listener(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listener error:", err)
		return 1
	}
	if !ok {
		fmt.Fprintln(os.Stderr, "listener error: not socket-activated")
		return 1
	}
	n := NewNotifier(log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.RunWatchdog(ctx)
	n.Ready("serving the test\nsecond line")
	c, err := ln.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, "accept:", err)
		return 1
	}
	defer c.Close()
	fmt.Fprintf(c, "activated=%v listen_fds=%q listen_pid=%q addr=%s\n", ok, os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), ln.Addr())
	line, _ := bufio.NewReader(c).ReadString('\n')
	n.Status("got " + strings.TrimSpace(line))
	if d := os.Getenv("STEPUP_SERVICE_TEST_LINGER"); d != "" {
		dd, _ := time.ParseDuration(d)
		time.Sleep(dd)
	}
	n.Stopping()
	fmt.Fprintln(c, "bye")
	return 0
}
