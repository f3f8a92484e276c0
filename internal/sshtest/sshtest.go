//go:build linux

// Package sshtest is test support: a real OpenSSH server (Debian's
// openssh-server) on 127.0.0.1 at a free high port, with a throw-away host
// key and a throw-away client key in authorized_keys, started and stopped
// by the test, and an ssh_config that names it by a host alias, as a
// user's RemoteForward setup would.
package sshtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// Server is a running sshd.
type Server struct {
	// Port is the port sshd listens on, on 127.0.0.1.
	Port int
	// Config is an ssh_config file: `ssh -F Config Alias` reaches the server.
	Config string
	// Alias is the host name the config gives the server.
	Alias string
	// Dir holds the keys, configs and logs.
	Dir string
	cmd *exec.Cmd
	log string
}

// Start starts sshd for the test; it is stopped at the end of the test.
// alias is the Host name the client config gives it ("build-01").
func Start(t testing.TB, alias string) *Server {
	t.Helper()
	sshd := testenv.Program(t, "sshd")
	testenv.Program(t, "ssh")
	keygen := testenv.Program(t, "ssh-keygen")
	dir := t.TempDir()
	// sshd checks the modes of the key files and of the directories above
	// authorized_keys (StrictModes); a t.TempDir is 0700 and ours.
	for _, k := range []string{"host_key", "client_key"} {
		out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "stepup-test", "-f", filepath.Join(dir, k)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// Privilege separation needs its empty directory.
	if os.Getuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755)
	}
	port := freePort(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
AllowUsers %s
LogLevel VERBOSE
Subsystem sftp internal-sftp
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"), me.Username)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(dir, "sshd.log")
	s := &Server{Port: port, Dir: dir, Alias: alias, log: logf}
	s.cmd = exec.Command(sshd, "-D", "-e", "-f", cfg, "-E", logf)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	// The client side: a config naming the server by its alias, as a
	// user's ~/.ssh/config would.
	hostPub, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Config = filepath.Join(dir, "ssh_config")
	client := fmt.Sprintf(`Host %s
  HostName 127.0.0.1
  Port %d
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
  ExitOnForwardFailure yes
`, alias, port, me.Username, filepath.Join(dir, "client_key"), known)
	if err := os.WriteFile(s.Config, []byte(client), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			r := bufio.NewReader(c)
			line, _ := r.ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "SSH-2.0-") {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf)
			t.Fatalf("sshd did not start on 127.0.0.1:%d: %s", port, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// Log returns what sshd logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
