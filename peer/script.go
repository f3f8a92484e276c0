package peer

import (
	"os"
	"path/filepath"
	"strings"
)

// interp describes how an interpreter's command line names its script:
// the options that take the next argument as their value, and those after
// which no script follows (code on the command line, a module).
type interp struct {
	withValue []string
	noScript  []string
}

var interpreters = map[string]interp{
	"python": {withValue: []string{"-W", "-X", "-Q", "--check-hash-based-pycs"}, noScript: []string{"-c", "-m", "-"}},
	"pypy":   {withValue: []string{"-W", "-X"}, noScript: []string{"-c", "-m", "-"}},
	"node": {withValue: []string{"-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions", "--env-file", "--title"},
		noScript: []string{"-e", "--eval", "-p", "--print", "-i", "--interactive", "-", "--test"}},
	"perl":    {withValue: []string{"-I", "-M", "-m", "-x"}, noScript: []string{"-e", "-E", "-"}},
	"ruby":    {withValue: []string{"-I", "-r", "-C", "-E", "--encoding"}, noScript: []string{"-e", "-"}},
	"php":     {withValue: []string{"-c", "-d", "-z"}, noScript: []string{"-r", "-a", "-"}},
	"lua":     {withValue: []string{"-l"}, noScript: []string{"-e", "-i", "-"}},
	"tclsh":   {noScript: []string{"-"}},
	"sh":      {withValue: []string{"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}, noScript: []string{"-c", "-s", "-i", "-"}},
	"Rscript": {withValue: []string{"--default-packages"}, noScript: []string{"-e"}},
}

// shells share sh's command line.
var shells = []string{"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"}

// interpreterOf returns the rules of the interpreter exe is, by its file
// name without a version suffix (python3.11, perl5.36.0, ruby3.1), or
// false when exe is no interpreter.
func interpreterOf(exe string) (interp, bool) {
	name := filepath.Base(exe)
	name = strings.TrimRight(name, "0123456789.")
	name = strings.TrimSuffix(name, "-")
	switch name {
	case "nodejs":
		name = "node"
	case "luajit":
		name = "lua"
	}
	for _, s := range shells {
		if name == s {
			name = "sh"
		}
	}
	in, ok := interpreters[name]
	return in, ok
}

// scriptOf returns the absolute path of the script an interpreter's
// command line names, or "": the first non-option argument of argv
// (argv[0] is the interpreter), resolved against cwd, when it names a
// regular file. root prefixes the path for the file check (the
// process's /proc/PID/root, or "").
func scriptOf(exe string, argv []string, cwd, root string) string {
	in, ok := interpreterOf(exe)
	if !ok || len(argv) < 2 {
		return ""
	}
	arg := ""
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			if i+1 < len(argv) {
				arg = argv[i+1]
			}
			break
		}
		if contains(in.noScript, a) {
			return ""
		}
		if len(a) > 1 && (a[0] == '-' || a[0] == '+' && len(a) == 2) {
			if contains(in.withValue, a) {
				i++
			}
			// -c'code' or -ecode: an option with its value attached.
			for _, ns := range in.noScript {
				if len(ns) == 2 && ns[0] == '-' && strings.HasPrefix(a, ns) && !strings.HasPrefix(a, "--") {
					return ""
				}
			}
			continue
		}
		arg = a
		break
	}
	if arg == "" || strings.IndexByte(arg, 0) >= 0 {
		return ""
	}
	if !filepath.IsAbs(arg) {
		if cwd == "" || !filepath.IsAbs(cwd) {
			return ""
		}
		arg = filepath.Join(cwd, arg)
	}
	arg = filepath.Clean(arg)
	fi, err := os.Stat(root + arg)
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return arg
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
