package peer

import (
	"os"
	"path/filepath"
	"testing"
)

func TestScriptOf(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a.py", "sign.mjs", "run.sh", "x.pl"} {
		os.WriteFile(filepath.Join(dir, f), []byte("#\n"), 0o600)
	}
	os.Mkdir(filepath.Join(dir, "d"), 0o700)
	a := filepath.Join(dir, "a.py")
	for _, tc := range []struct {
		exe  string
		argv []string
		want string
	}{
		{"/usr/bin/python3.11", []string{"python3", "a.py"}, a},
		{"/usr/bin/python3", []string{"python3", "-u", "-W", "ignore", "a.py", "arg"}, a},
		{"/usr/bin/python3", []string{"python3", "-c", "print(1)", "a.py"}, ""},
		{"/usr/bin/python3", []string{"python3", "-m", "http.server"}, ""},
		{"/usr/bin/python3", []string{"python3", "-cimport os", "a.py"}, ""},
		{"/usr/bin/python3", []string{"python3", "nope.py"}, ""},
		{"/usr/bin/python3", []string{"python3", "d"}, ""},
		{"/usr/bin/python3", []string{"python3"}, ""},
		{"/usr/bin/node", []string{"node", "--require", "a.py", "sign.mjs"}, filepath.Join(dir, "sign.mjs")},
		{"/usr/bin/node", []string{"node", "--input-type=module", "-e", "1"}, ""},
		{"/usr/bin/nodejs", []string{"node", filepath.Join(dir, "sign.mjs")}, filepath.Join(dir, "sign.mjs")},
		{"/usr/bin/dash", []string{"sh", "run.sh"}, filepath.Join(dir, "run.sh")},
		{"/usr/bin/bash", []string{"bash", "-c", "run.sh"}, ""},
		{"/usr/bin/bash", []string{"-bash"}, ""},
		{"/usr/bin/bash", []string{"bash", "-o", "pipefail", "--", "run.sh"}, filepath.Join(dir, "run.sh")},
		{"/usr/bin/perl5.36.0", []string{"perl", "-w", "x.pl"}, filepath.Join(dir, "x.pl")},
		{"/usr/bin/perl", []string{"perl", "-e", "print 1", "x.pl"}, ""},
		{"/usr/bin/curl", []string{"curl", "a.py"}, ""},
		{"/usr/bin/python3", []string{"python3", "../" + filepath.Base(dir) + "/a.py"}, a},
	} {
		if got := scriptOf(tc.exe, tc.argv, dir, ""); got != tc.want {
			t.Errorf("scriptOf(%s, %q) = %q, want %q", tc.exe, tc.argv, got, tc.want)
		}
	}
	if got := scriptOf("/usr/bin/python3", []string{"python3", "a.py"}, "relative/cwd", ""); got != "" {
		t.Errorf("a relative cwd resolved a script: %q", got)
	}
}

func TestDisplay(t *testing.T) {
	for _, tc := range []struct {
		id         Identity
		want, full string
	}{
		{Identity{Proc: Proc{PID: 4242}, Executable: "/usr/bin/node", Script: home() + "/app/sign.mjs"},
			"node ~/app/sign.mjs (pid 4242)", "/usr/bin/node " + home() + "/app/sign.mjs (pid 4242)"},
		{Identity{Proc: Proc{PID: 8151}, Executable: "/usr/local/bin/stepupctl"}, "stepupctl (pid 8151)", "/usr/local/bin/stepupctl (pid 8151)"},
		{Identity{Proc: Proc{PID: 7}, Executable: "/tmp/x/stepupctl"}, "/tmp/x/stepupctl (pid 7)", "/tmp/x/stepupctl (pid 7)"},
		{Identity{Proc: Proc{PID: 7}}, "pid 7", "pid 7"},
		{Identity{Proc: Proc{PID: 7}, Executable: "/tmp/a\nb"}, `"/tmp/a\nb" (pid 7)`, `"/tmp/a\nb" (pid 7)`},
	} {
		if got := tc.id.Display(); got != tc.want {
			t.Errorf("Display = %q, want %q", got, tc.want)
		}
		if got := tc.id.FullDisplay(); got != tc.full {
			t.Errorf("FullDisplay = %q, want %q", got, tc.full)
		}
	}
}
