//go:build linux

// Package keyringtest runs a real gnome-keyring on a private D-Bus session
// bus for tests: the keychain's own tests and the agent's end-to-end ones
// start it themselves, so that `go test` needs nothing around it and the
// fault tests can kill and freeze the daemon without touching the
// session's keyring. The bus has no .service files: a killed gnome-keyring
// stays dead until the test starts it again.
package keyringtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`

// Keyring is a private session bus with gnome-keyring on it, unlocked with
// a password (which creates the login collection, the default).
type Keyring struct {
	Dir  string // its HOME, XDG_DATA_HOME and XDG_RUNTIME_DIR live here
	Addr string // the bus address, for DBUS_SESSION_BUS_ADDRESS

	ready func(addr string) error
	bus   *exec.Cmd
	mu    sync.Mutex
	gk    *exec.Cmd
}

// Start starts the bus and gnome-keyring. ready is called, every 50 ms
// for up to 10 s, after each start of gnome-keyring until it returns nil:
// it should open the Secret Service on the bus at addr.
func Start(ready func(addr string) error) (*Keyring, error) {
	dir, err := os.MkdirTemp("", "kc") // short: socket paths are limited to 108 bytes
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"home", "data", "run"} {
		os.Mkdir(filepath.Join(dir, d), 0o700)
	}
	sock := filepath.Join(dir, "bus")
	cfg := filepath.Join(dir, "bus.conf")
	k := &Keyring{Dir: dir, Addr: "unix:path=" + sock, ready: ready}
	if err := os.WriteFile(cfg, fmt.Appendf(nil, busConfig, sock), 0o600); err != nil {
		k.Close()
		return nil, err
	}
	k.bus = exec.Command("dbus-daemon", "--config-file="+cfg, "--nofork", "--nopidfile")
	if err := k.bus.Start(); err != nil {
		k.Close()
		return nil, err
	}
	if err := wait(5*time.Second, func() error { _, err := os.Stat(sock); return err }); err != nil {
		k.Close()
		return nil, fmt.Errorf("the test bus did not start: %v", err)
	}
	if err := k.StartDaemon(); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// Env is the environment of a program that should use this keyring.
func (k *Keyring) Env() []string {
	return append(os.Environ(),
		"DBUS_SESSION_BUS_ADDRESS="+k.Addr,
		"HOME="+filepath.Join(k.Dir, "home"),
		"XDG_DATA_HOME="+filepath.Join(k.Dir, "data"),
		"XDG_RUNTIME_DIR="+filepath.Join(k.Dir, "run"),
		"DISPLAY=", "WAYLAND_DISPLAY=")
}

// StartDaemon starts (or restarts, over the same keyring files)
// gnome-keyring and waits until it is ready.
func (k *Keyring) StartDaemon() error {
	gk := exec.Command("gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets")
	gk.Env = k.Env()
	gk.Stdin = strings.NewReader("PASS")
	if err := gk.Start(); err != nil {
		return err
	}
	k.mu.Lock()
	k.gk = gk
	k.mu.Unlock()
	if err := wait(10*time.Second, func() error { return k.ready(k.Addr) }); err != nil {
		return fmt.Errorf("gnome-keyring did not come up: %v", err)
	}
	return nil
}

// Kill kills gnome-keyring with SIGKILL (thawing it first if frozen).
func (k *Keyring) Kill() {
	k.mu.Lock()
	gk := k.gk
	k.gk = nil
	k.mu.Unlock()
	if gk != nil {
		gk.Process.Signal(syscall.SIGCONT)
		gk.Process.Kill()
		gk.Wait()
	}
}

// Signal sends sig (SIGSTOP, SIGCONT) to gnome-keyring.
func (k *Keyring) Signal(sig syscall.Signal) error {
	k.mu.Lock()
	gk := k.gk
	k.mu.Unlock()
	if gk == nil {
		return fmt.Errorf("gnome-keyring is not running")
	}
	return gk.Process.Signal(sig)
}

// Close stops gnome-keyring and the bus and removes Dir.
func (k *Keyring) Close() {
	k.Kill()
	if k.bus != nil && k.bus.Process != nil {
		k.bus.Process.Kill()
		k.bus.Wait()
	}
	os.RemoveAll(k.Dir)
}

func wait(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
