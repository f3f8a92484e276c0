package packaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/agent"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// debFiles are the files the package must ship (beside directories).
var debFiles = []string{
	"/usr/bin/stepup-agent",
	"/usr/bin/stepupctl",
	"/usr/bin/stepupctl-inspect",
	"/usr/lib/systemd/user/stepup-agent.service",
	"/usr/lib/systemd/user/stepup-agent.socket",
	"/usr/lib/systemd/user-environment-generators/60-stepup-agent",
	"/etc/pam.d/stepup-agent",
	"/usr/share/man/man1/stepup-agent.1.gz",
	"/usr/share/man/man1/stepupctl.1.gz",
	"/usr/share/man/man1/stepupctl-prompt.1.gz",
	"/usr/share/man/man5/stepup-policy.5.gz",
	"/usr/share/bash-completion/completions/stepupctl",
	"/usr/share/zsh/vendor-completions/_stepupctl",
	"/usr/share/fish/vendor_completions.d/stepupctl.fish",
	"/usr/share/doc/stepup-agent/README.md",
	"/usr/share/doc/stepup-agent/policy.md",
}

// TestDebianPackage builds the .deb with packaging/deb/build.sh, checks
// its metadata and file list with dpkg-deb, installs it on this machine
// with dpkg -i, runs what it installed (the daemon's --version, the man
// pages through man, systemd-analyze --user verify on the installed
// units, the environment generator, bash-completion's loader), then
// purges it and checks that none of its files is left. It needs root; it
// refuses to run when the package is already installed, so as never to
// remove an installation it did not make.
//
// While it is installed, /etc/pam.d/stepup-agent makes every agent on the
// machine offer the password method, which other packages' tests do not
// expect; so it runs only with STEPUP_TEST_DEB=1, which
// scripts/test-in-session.sh sets in a step of its own before the Go suite.
func TestDebianPackage(t *testing.T) {
	if os.Getenv("STEPUP_TEST_DEB") != "1" {
		t.Skip("installs a package into /usr and /etc: run alone with STEPUP_TEST_DEB=1 (scripts/test-in-session.sh does, before the Go suite)")
	}
	if os.Getuid() != 0 {
		testenv.Missing(t, "root (dpkg -i installs into /usr)")
	}
	dpkg := requireProgram(t, "dpkg")
	dpkgDeb := requireProgram(t, "dpkg-deb")
	requireProgram(t, "go")
	if out, err := exec.Command(dpkg, "-s", "stepup-agent").CombinedOutput(); err == nil && strings.Contains(string(out), "Status: install ok installed") {
		t.Fatalf("stepup-agent is already installed here; remove it (dpkg --purge stepup-agent) to run this test")
	}
	root := testenv.RepoRoot(t)
	out := t.TempDir()
	build := exec.Command(filepath.Join(root, "packaging", "deb", "build.sh"), out)
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("build.sh made %v", debs)
	}
	deb := debs[0]
	version := strings.Replace(agent.Version, "-", "~", 1)
	if want := "stepup-agent_" + version + "_"; !strings.HasPrefix(filepath.Base(deb), want) {
		t.Errorf("package file %s, want %s<arch>.deb", filepath.Base(deb), want)
	}

	// Metadata.
	info, err := run(t, nil, dpkgDeb, "-I", deb)
	if err != nil {
		t.Fatalf("dpkg-deb -I: %v\n%s", err, info)
	}
	for _, re := range []string{
		`(?m)^ Package: stepup-agent$`,
		`(?m)^ Version: ` + regexp.QuoteMeta(version) + `$`,
		`(?m)^ Architecture: (amd64|arm64|386|armhf|riscv64)$`,
		`(?m)^ Recommends: .*\bpinentry\b`,
		`(?m)^ Suggests: .*\bzenity\b`,
		`(?m)^ Suggests: .*\bgnome-keyring\b`,
		`(?m)^ Description: .+`,
		`(?m)^ Maintainer: .+`,
	} {
		if !regexp.MustCompile(re).MatchString(info) {
			t.Errorf("dpkg-deb -I lacks %s:\n%s", re, info)
		}
	}
	if strings.Contains(info, " Depends:") {
		t.Errorf("the static binaries need no Depends:\n%s", info)
	}
	conffiles, _ := run(t, nil, dpkgDeb, "-f", deb, "Conffiles")
	ctrl := t.TempDir()
	if b, err := run(t, nil, dpkgDeb, "-e", deb, ctrl); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, b)
	}
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/pam.d/stepup-agent" {
		t.Errorf("conffiles = %q %q, want /etc/pam.d/stepup-agent", b, conffiles)
	}

	// File list: what must be there, with its mode, and nothing outside
	// the package's places.
	list, err := run(t, nil, dpkgDeb, "-c", deb)
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, list)
	}
	modes := map[string]string{}
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		path := strings.TrimPrefix(f[len(f)-1], ".")
		if f[1] != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", path, f[1])
		}
		if strings.HasSuffix(path, "/") {
			continue
		}
		modes[path] = f[0]
		files = append(files, path)
		ok := false
		for _, prefix := range []string{"/usr/bin/", "/usr/lib/systemd/", "/usr/share/man/", "/usr/share/doc/stepup-agent/",
			"/usr/share/bash-completion/", "/usr/share/zsh/", "/usr/share/fish/", "/etc/pam.d/"} {
			ok = ok || strings.HasPrefix(path, prefix)
		}
		if !ok {
			t.Errorf("the package ships %s, outside the places it installs to", path)
		}
	}
	for _, want := range debFiles {
		if modes[want] == "" {
			t.Errorf("the package lacks %s", want)
		}
	}
	for _, exe := range []string{"/usr/bin/stepup-agent", "/usr/bin/stepupctl", "/usr/bin/stepupctl-inspect", "/usr/lib/systemd/user-environment-generators/60-stepup-agent"} {
		if modes[exe] != "-rwxr-xr-x" {
			t.Errorf("%s has mode %s, want -rwxr-xr-x", exe, modes[exe])
		}
	}
	_, helperSrc := os.Stat(filepath.Join(root, "cmd", "stepup-pam-helper"))
	_, pamHeaders := os.Stat("/usr/include/security/pam_appl.h")
	if wantHelper := helperSrc == nil && pamHeaders == nil; wantHelper != (modes["/usr/bin/stepup-pam-helper"] != "") {
		t.Errorf("stepup-pam-helper in the package: %v, want %v (cmd/stepup-pam-helper exists: %v, libpam headers: %v)",
			!wantHelper, wantHelper, helperSrc == nil, pamHeaders == nil)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Install. Whatever happens next, purge.
	t.Cleanup(func() {
		if b, err := dpkgRun(t, dpkg, "--purge", "stepup-agent"); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, b)
		}
	})
	if b, err := dpkgRun(t, dpkg, "-i", deb); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, b)
	}
	if b, err := run(t, nil, "/usr/bin/stepup-agent", "--version"); err != nil || strings.TrimSpace(b) != "stepup-agent "+agent.Version {
		t.Errorf("stepup-agent --version: %v %q, want %q", err, b, "stepup-agent "+agent.Version)
	}
	if b, err := run(t, nil, "/usr/bin/stepupctl", "--help"); err != nil || !strings.Contains(b, "stepupctl") {
		t.Errorf("stepupctl --help: %v\n%s", err, b)
	}
	// doctor runs in the stepupctl-inspect installed beside stepupctl.
	if b, err := run(t, nil, "/usr/bin/stepupctl", "doctor", "--help"); err != nil || !strings.Contains(b, "stepupctl doctor") {
		t.Errorf("stepupctl doctor --help: %v\n%s", err, b)
	}
	if man, err := exec.LookPath("man"); err == nil {
		for page, want := range map[string]string{"stepup-agent": "/usr/share/man/man1/stepup-agent.1.gz",
			"stepupctl": "/usr/share/man/man1/stepupctl.1.gz", "stepup-policy": "/usr/share/man/man5/stepup-policy.5.gz"} {
			if b, err := run(t, nil, man, "-w", page); err != nil || strings.TrimSpace(b) != want {
				t.Errorf("man -w %s: %v %q, want %s", page, err, b, want)
			}
		}
	}
	verifyUnits(t, "/usr/lib/systemd/user")
	rt := t.TempDir()
	if b, err := run(t, []string{"XDG_RUNTIME_DIR=" + rt, "PATH=/usr/bin:/bin"}, "/usr/lib/systemd/user-environment-generators/60-stepup-agent"); err != nil ||
		strings.TrimSpace(b) != "STEPUP_AUTH_SOCK="+rt+"/stepup/agent.sock" {
		t.Errorf("the environment generator printed %q (%v)", b, err)
	}
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err == nil {
		// bash-completion's loader finds the script by the command's name.
		b, err := run(t, nil, "bash", "-c", "source /usr/share/bash-completion/bash_completion; _completion_loader stepupctl; complete -p stepupctl")
		if err != nil || !strings.Contains(b, "__start_stepupctl stepupctl") {
			t.Errorf("bash-completion does not load stepupctl's completion: %v\n%s", err, b)
		}
	}

	// Purge, and nothing it installed is left.
	if b, err := dpkgRun(t, dpkg, "--purge", "stepup-agent"); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, b)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s is left after dpkg --purge", f)
		}
	}
	for _, d := range []string{"/usr/share/doc/stepup-agent"} {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("%s is left after dpkg --purge", d)
		}
	}
	if b, _ := run(t, nil, dpkg, "-s", "stepup-agent"); strings.Contains(b, "Status: install") && !strings.Contains(b, "not-installed") {
		t.Errorf("dpkg still knows the package after --purge:\n%s", b)
	}
}

// dpkgRun runs dpkg (with up to 5 minutes for its triggers, man-db's
// among them), waiting out another dpkg or apt that holds its lock (this
// machine is shared).
func dpkgRun(t *testing.T, dpkg string, args ...string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		b, err := exec.CommandContext(ctx, dpkg, args...).CombinedOutput()
		cancel()
		out := string(b)
		if err == nil || !strings.Contains(out, "lock") || time.Now().After(deadline) {
			return out, err
		}
		time.Sleep(2 * time.Second)
	}
}
