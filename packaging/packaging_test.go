// Package packaging holds the service files (systemd user units, the
// launchd plist, install.sh); its tests check them with the tools that
// read them: systemd-analyze, systemd's environment.d generator, /bin/sh,
// and an XML plist parse (plutil where it exists).
package packaging

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

func requireProgram(t *testing.T, name string) string {
	t.Helper()
	return testenv.Program(t, name)
}

func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = env
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// unitKeys parses a unit file into section.key -> values.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		keys[section+"."+k] = append(keys[section+"."+k], v)
	}
	return keys
}

func TestUnitSettings(t *testing.T) {
	sock := unitKeys(t, "systemd/user/stepup-agent.socket")
	svc := unitKeys(t, "systemd/user/stepup-agent.service")
	for k, want := range map[string]string{
		"Socket.ListenStream":       "%t/stepup/agent.sock %t/stepup/remote.sock",
		"Socket.FileDescriptorName": "agent",
		"Socket.SocketMode":         "0600",
		"Socket.DirectoryMode":      "0700",
		"Socket.Accept":             "no",
		"Install.WantedBy":          "sockets.target",
	} {
		if got := strings.Join(sock[k], " "); got != want {
			t.Errorf("socket %s = %q; want %q", k, got, want)
		}
	}
	for k, want := range map[string]string{
		"Service.Type":                     "notify",
		"Service.ExecStart":                "/usr/local/bin/stepup-agent -D",
		"Service.Restart":                  "on-failure",
		"Service.WatchdogSec":              "30s",
		"Service.RuntimeDirectory":         "stepup",
		"Service.RuntimeDirectoryMode":     "0700",
		"Service.RuntimeDirectoryPreserve": "yes",
		"Service.UMask":                    "0077",
		"Service.NoNewPrivileges":          "yes",
		"Service.LockPersonality":          "yes",
		"Service.MemoryDenyWriteExecute":   "yes",
		"Service.SystemCallArchitectures":  "native",
		"Service.RestrictAddressFamilies":  "AF_UNIX AF_INET AF_INET6",
		"Service.ProtectSystem":            "strict",
		"Service.ProtectHome":              "read-only",
		"Service.ReadWritePaths":           "%h/.local/state/stepup",
	} {
		if got := strings.Join(svc[k], " "); got != want {
			t.Errorf("service %s = %q; want %q", k, got, want)
		}
	}
}

// verifyUnits runs systemd-analyze --user verify on the units in dir and
// fails on any complaint (it exits 0 on unknown keys, so output counts).
func verifyUnits(t *testing.T, dir string) {
	t.Helper()
	sa := requireProgram(t, "systemd-analyze")
	rt := t.TempDir() // a user manager needs XDG_RUNTIME_DIR
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_RUNTIME_DIR=" + rt, "SYSTEMD_LOG_LEVEL=notice"}
	out, err := run(t, env, sa, "--user", "verify", filepath.Join(dir, "stepup-agent.socket"), filepath.Join(dir, "stepup-agent.service"))
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze --user verify: %v\n%s", err, out)
	}
	// The offline security review: keep the hardening from eroding.
	out, err = run(t, env, sa, "--user", "security", "--offline=true", "--threshold=50", filepath.Join(dir, "stepup-agent.service"))
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure above 5.0 or error: %v\n%s", err, out)
	}
	t.Logf("%s", lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// fakeBinaries writes stand-ins for stepup-agent, stepupctl and
// stepupctl-inspect.
func fakeBinaries(t *testing.T) string {
	dir := t.TempDir()
	for _, b := range []string{"stepup-agent", "stepupctl", "stepupctl-inspect"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho \"$0 $*\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	// The units as shipped, with ExecStart pointed at a file that exists
	// (verify checks that the program is executable).
	dir := t.TempDir()
	bin := fakeBinaries(t)
	for _, n := range []string{"stepup-agent.socket", "stepup-agent.service"} {
		b, err := os.ReadFile(filepath.Join("systemd/user", n))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/stepup-agent"), []byte(filepath.Join(bin, "stepup-agent")))
		os.WriteFile(filepath.Join(dir, n), b, 0o644)
	}
	verifyUnits(t, dir)
}

// TestInstallScript runs install.sh into a scratch home (no user manager
// here: it installs the files and prints the systemctl commands), checks
// what it wrote, verifies the installed units, runs it again and
// uninstalls.
func TestInstallScript(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the systemd install path")
	}
	home := t.TempDir()
	bin := fakeBinaries(t)
	// The password method's helper, installed next to the agent.
	if err := os.WriteFile(filepath.Join(bin, "stepup-pam-helper"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	for i := 0; i < 2; i++ { // safe to run again
		out, err := run(t, env, "sh", "install.sh", "--from", bin, "--no-enable")
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		if !strings.Contains(out, "systemctl --user enable --now stepup-agent.socket") {
			t.Errorf("install.sh --no-enable does not print the enable command:\n%s", out)
		}
	}
	units := filepath.Join(home, ".config/systemd/user")
	svc := unitKeys(t, filepath.Join(units, "stepup-agent.service"))
	if got, want := svc["Service.ExecStart"], filepath.Join(home, ".local/bin/stepup-agent")+" -D"; len(got) != 1 || got[0] != want {
		t.Errorf("installed ExecStart = %q; want %q", got, want)
	}
	for p, mode := range map[string]os.FileMode{
		".local/bin/stepup-agent":                    0o755,
		".local/bin/stepupctl":                       0o755,
		".local/bin/stepupctl-inspect":               0o755,
		".local/bin/stepup-pam-helper":               0o755,
		".config/systemd/user/stepup-agent.socket":   0o644,
		".config/systemd/user/stepup-agent.service":  0o644,
		".config/environment.d/60-stepup-agent.conf": 0o644,
		".local/state/stepup":                        0o700 | os.ModeDir,
	} {
		fi, err := os.Stat(filepath.Join(home, p))
		if err != nil {
			t.Errorf("install.sh did not install %s: %v", p, err)
			continue
		}
		if fi.Mode()&(os.ModeDir|os.ModePerm) != mode {
			t.Errorf("%s mode %v; want %v", p, fi.Mode(), mode)
		}
	}
	verifyUnits(t, units)
	environmentD(t, home)

	out, err := run(t, env, "sh", "install.sh", "--uninstall")
	if err != nil {
		t.Fatalf("install.sh --uninstall: %v\n%s", err, out)
	}
	for _, p := range []string{".local/bin/stepup-agent", ".local/bin/stepupctl", ".local/bin/stepupctl-inspect", ".local/bin/stepup-pam-helper", ".config/systemd/user/stepup-agent.service", ".config/environment.d/60-stepup-agent.conf"} {
		if _, err := os.Stat(filepath.Join(home, p)); err == nil {
			t.Errorf("--uninstall left %s", p)
		}
	}
	if _, err := os.Stat(filepath.Join(home, ".local/state/stepup")); err != nil {
		t.Errorf("--uninstall removed the state directory: %v", err)
	}
}

// environmentD runs systemd's own environment.d generator, as the user
// manager does at login, on the installed 60-stepup-agent.conf.
func environmentD(t *testing.T, home string) {
	t.Helper()
	gen := "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"
	if _, err := os.Stat(gen); err != nil {
		requireProgram(t, gen)
	}
	out, err := run(t, []string{"HOME=" + home, "XDG_RUNTIME_DIR=/run/user/4242", "PATH=/usr/bin:/bin"}, gen)
	if err != nil {
		t.Fatalf("%s: %v\n%s", gen, err, out)
	}
	if !strings.Contains(out, "STEPUP_AUTH_SOCK=/run/user/4242/stepup/agent.sock\n") {
		t.Errorf("environment.d generator output lacks STEPUP_AUTH_SOCK:\n%s", out)
	}
}

func TestUserEnvironmentGenerator(t *testing.T) {
	out, err := run(t, []string{"XDG_RUNTIME_DIR=/run/user/4242", "PATH=/usr/bin:/bin"}, "systemd/user-environment-generators/60-stepup-agent")
	if err != nil || out != "STEPUP_AUTH_SOCK=/run/user/4242/stepup/agent.sock\n" {
		t.Fatalf("generator: %v, %q", err, out)
	}
	out, err = run(t, []string{"PATH=/usr/bin:/bin"}, "systemd/user-environment-generators/60-stepup-agent")
	if want := fmt.Sprintf("STEPUP_AUTH_SOCK=/run/user/%d/stepup/agent.sock\n", os.Getuid()); err != nil || out != want {
		t.Fatalf("generator without XDG_RUNTIME_DIR: %v, %q; want %q", err, out, want)
	}
}

// plist is a generic property list value.
type plistValue struct {
	Kind  string // dict, array, string, integer, true, false
	Str   string
	Items []plistValue
	Keys  []string // dict keys, parallel to Items
}

func parsePlist(t *testing.T, r io.Reader) plistValue {
	t.Helper()
	d := xml.NewDecoder(r)
	d.Strict = true
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("plist: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "plist" {
				t.Fatalf("root element %s; want plist", se.Name.Local)
			}
			v := parseValue(t, d, nextStart(t, d))
			return v
		}
	}
}

func nextStart(t *testing.T, d *xml.Decoder) xml.StartElement {
	t.Helper()
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("plist: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			return tok
		case xml.EndElement:
			return xml.StartElement{}
		}
	}
}

func parseValue(t *testing.T, d *xml.Decoder, se xml.StartElement) plistValue {
	t.Helper()
	v := plistValue{Kind: se.Name.Local}
	switch se.Name.Local {
	case "dict":
		for {
			k := nextStart(t, d)
			if k.Name.Local == "" {
				return v
			}
			if k.Name.Local != "key" {
				t.Fatalf("dict entry starts with <%s>, not <key>", k.Name.Local)
			}
			var key string
			if err := d.DecodeElement(&key, &k); err != nil {
				t.Fatal(err)
			}
			val := nextStart(t, d)
			if val.Name.Local == "" {
				t.Fatalf("key %s has no value", key)
			}
			v.Keys = append(v.Keys, key)
			v.Items = append(v.Items, parseValue(t, d, val))
		}
	case "array":
		for {
			e := nextStart(t, d)
			if e.Name.Local == "" {
				return v
			}
			v.Items = append(v.Items, parseValue(t, d, e))
		}
	case "string", "integer", "key":
		if err := d.DecodeElement(&v.Str, &se); err != nil {
			t.Fatal(err)
		}
		if se.Name.Local == "integer" {
			if _, err := strconv.Atoi(v.Str); err != nil {
				t.Fatalf("integer %q: %v", v.Str, err)
			}
		}
	case "true", "false":
		d.Skip()
	default:
		t.Fatalf("unexpected plist element <%s>", se.Name.Local)
	}
	return v
}

func (v plistValue) get(key string) (plistValue, bool) {
	for i, k := range v.Keys {
		if k == key {
			return v.Items[i], true
		}
	}
	return plistValue{}, false
}

func TestLaunchdPlist(t *testing.T) {
	const path = "launchd/com.stepup-agent.plist"
	if p, err := exec.LookPath("plutil"); err == nil {
		if out, err := run(t, nil, p, "-lint", path); err != nil {
			t.Fatalf("plutil -lint: %v\n%s", err, out)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := parsePlist(t, f)
	if root.Kind != "dict" {
		t.Fatalf("plist root is %s", root.Kind)
	}
	seen := map[string]bool{}
	for _, k := range root.Keys {
		if seen[k] {
			t.Errorf("duplicate key %s", k)
		}
		seen[k] = true
	}
	if v, _ := root.get("Label"); v.Str != "com.stepup-agent" {
		t.Errorf("Label = %q", v.Str)
	}
	if v, _ := root.get("RunAtLoad"); v.Kind != "true" {
		t.Errorf("RunAtLoad is %s; want true", v.Kind)
	}
	if v, ok := root.get("KeepAlive"); !ok || v.Kind != "dict" {
		t.Errorf("KeepAlive missing")
	} else if se, _ := v.get("SuccessfulExit"); se.Kind != "false" {
		t.Errorf("KeepAlive.SuccessfulExit is %s; want false", se.Kind)
	}
	if v, _ := root.get("Umask"); v.Str != "63" {
		t.Errorf("Umask = %q; want 63 (0077)", v.Str)
	}
	args, _ := root.get("ProgramArguments")
	if len(args.Items) != 3 || args.Items[0].Str != "/bin/sh" || args.Items[1].Str != "-c" {
		t.Fatalf("ProgramArguments = %+v; want /bin/sh -c SCRIPT", args.Items)
	}
	script := args.Items[2].Str

	// Run the script with stand-ins for the macOS programs it calls: it
	// must publish and pass the same socket path, in the user's temporary
	// directory, to stepup-agent -D -a.
	dir := t.TempDir()
	tmp := filepath.Join(dir, "T") + "/"
	calls := filepath.Join(dir, "calls")
	stub := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755)
		return p
	}
	getconf := stub("getconf", `[ "$1" = DARWIN_USER_TEMP_DIR ] && echo "`+tmp+`"`)
	launchctl := stub("launchctl", `echo "launchctl $*" >>`+calls)
	agent := stub("stepup-agent", `echo "agent $*" >>`+calls+`; echo "agent log line" >&2`)
	script = strings.NewReplacer("/usr/bin/getconf", getconf, "/bin/launchctl", launchctl, "/usr/local/bin/stepup-agent", agent).Replace(script)
	home := filepath.Join(dir, "home")
	out, err := run(t, []string{"HOME=" + home, "PATH=/usr/bin:/bin"}, "/bin/sh", "-c", script)
	if err != nil {
		t.Fatalf("plist script: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(calls)
	sock := fmt.Sprintf("%sstepup-%d/agent.sock", tmp, os.Getuid())
	want := "launchctl setenv STEPUP_AUTH_SOCK " + sock + "\nagent -D -a " + sock + "\n"
	if string(got) != want {
		t.Errorf("plist script ran:\n%s\nwant:\n%s", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(home, "Library/Logs/stepup-agent.log")); string(b) != "agent log line\n" {
		t.Errorf("agent's stderr not in ~/Library/Logs/stepup-agent.log: %q", b)
	}
}
