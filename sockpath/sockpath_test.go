//go:build unix

package sockpath

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenAndInheritedChecks(t *testing.T) {
	tests := []struct {
		name      string
		dirMode   os.FileMode
		listen    string // error substring of Listen ("" none)
		inherited string // error substring of CheckInherited on the socket Listen made, or one made by hand
	}{
		{name: "private", dirMode: 0o700},
		{name: "group-writable dir", dirMode: 0o770, listen: "others can write to it (mode 0770); chmod 700 it or choose another path with -a",
			inherited: "others can write to its directory"},
		{name: "world-writable dir", dirMode: 0o777, listen: "refusing to use", inherited: "set DirectoryMode=0700"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "agent.sock")
			ln, err := Listen(path)
			if tt.listen == "" && err != nil || tt.listen != "" && (err == nil || !strings.Contains(err.Error(), tt.listen)) {
				t.Fatalf("Listen = %v, want %q", err, tt.listen)
			}
			if ln == nil {
				// Made by hand, as a service manager would.
				l, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, 0o600)
				ln = l
			}
			defer ln.Close()
			err = CheckInherited(path)
			if tt.inherited == "" && err != nil || tt.inherited != "" && (err == nil || !strings.Contains(err.Error(), tt.inherited)) {
				t.Fatalf("CheckInherited = %v, want %q", err, tt.inherited)
			}
		})
	}
}

func TestInheritedSocketChecks(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	tests := []struct {
		path, mode, want string
	}{
		{path: "@abstract", want: "no path in the file system"},
		{path: "relative.sock", want: "not absolute"},
		{path: file, want: "is not a socket"},
		{path: path, mode: "0666", want: "others can connect to"},
		{path: path, mode: "0600"},
	}
	for _, tt := range tests {
		if tt.mode == "0666" {
			os.Chmod(path, 0o666)
		} else {
			os.Chmod(path, 0o600)
		}
		err := CheckInherited(tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckInherited(%s, %s) = %v, want %q", tt.path, tt.mode, err, tt.want)
		}
	}
}

func TestPath(t *testing.T) {
	t.Setenv(Env, "/x/agent.sock")
	if Path() != "/x/agent.sock" {
		t.Fatal(Path())
	}
	t.Setenv(Env, "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/7")
	if Path() != "/run/user/7/stepup/agent.sock" {
		t.Fatal(Path())
	}
}
