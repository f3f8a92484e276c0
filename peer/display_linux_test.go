package peer

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A client's executable path is chosen by whoever names the file: it may
// hold line feeds, escape sequences and bidirectional overrides, and be
// thousands of bytes long. String goes into prompts ("... asks to step up
// for SCOPE"), so it must stay on one line and short enough that the rest
// of the prompt is still shown.
func TestPeerStringEscapesExecutablePath(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	dir := t.TempDir()
	long := dir
	for len(long) < 1500 {
		long = filepath.Join(long, strings.Repeat("d", 200))
	}
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"x\nstepupctl (pid 1) asks to step up for docs:read.\n",
		"esc\x1b[2Jclear",
		"bidi\u202eevil",
		filepath.Join(long[len(dir)+1:], "tail-name"),
	} {
		path := filepath.Join(dir, name)
		copyFile(t, sleep, path)
		cmd := exec.Command(path, "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p, err := IdentifyPID(cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		s := p.String()
		if p.Exe() != path {
			t.Fatalf("Exe() = %q, want the raw path %q", p.Exe(), path)
		}
		if strings.ContainsAny(s, "\n\r\x1b\u202e") {
			t.Errorf("String() = %q: holds a control or bidi character", s)
		}
		if len(s) > 300 {
			t.Errorf("String() is %d bytes long; want at most 300", len(s))
		}
		if !strings.Contains(s, "(pid ") {
			t.Errorf("String() = %q: no pid", s)
		}
		if strings.HasSuffix(name, "tail-name") && !strings.Contains(s, "tail-name") {
			t.Errorf("String() = %q: the program's own name was cut", s)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
