// Package examples_test checks docs/integrating.md: every code block is
// either a verbatim copy of a file (or a "docs:begin NAME" region of one)
// that is compiled and tested elsewhere, or a shell recipe that this test
// runs against a real agent and the example wallet service.
package examples_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

type block struct {
	line      int
	directive string // the HTML comment above the fence, without <!-- -->
	lang      string
	body      string
}

var directiveRE = regexp.MustCompile(`^<!--\s*(.*?)\s*-->$`)

func blocks(t *testing.T, doc string) []block {
	var out []block
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "```") {
			continue
		}
		b := block{line: i + 1, lang: strings.TrimPrefix(lines[i], "```")}
		if i > 0 {
			if m := directiveRE.FindStringSubmatch(lines[i-1]); m != nil {
				b.directive = m[1]
			}
		}
		var body []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			body = append(body, lines[i])
		}
		b.body = strings.Join(body, "\n") + "\n"
		out = append(out, b)
	}
	return out
}

// region returns the lines between "// docs:begin NAME" and
// "// docs:end NAME", with their common leading tabs removed.
func region(t *testing.T, src, name string) string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.Split(src, "\n") {
		switch strings.TrimSpace(l) {
		case "// docs:begin " + name:
			in = true
			continue
		case "// docs:end " + name:
			in = false
		}
		if in {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no docs:begin %s region", name)
	}
	tabs := -1
	for _, l := range out {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "\t"))
		if tabs < 0 || n < tabs {
			tabs = n
		}
	}
	for i, l := range out {
		if len(l) >= tabs {
			out[i] = l[tabs:]
		}
	}
	return strings.Join(out, "\n") + "\n"
}

func TestIntegratingDoc(t *testing.T) {
	raw, err := os.ReadFile("../docs/integrating.md")
	if err != nil {
		t.Fatal(err)
	}
	bs := blocks(t, string(raw))
	var runs []block
	for _, b := range bs {
		switch {
		case strings.HasPrefix(b.directive, "file:"):
			ref := strings.TrimSpace(strings.TrimPrefix(b.directive, "file:"))
			path, name, _ := strings.Cut(ref, "#")
			src, err := os.ReadFile(filepath.Join("..", path))
			if err != nil {
				t.Fatalf("docs/integrating.md:%d: %v", b.line, err)
			}
			want := string(src)
			if name != "" {
				want = region(t, want, name)
			}
			if b.body != want {
				t.Errorf("docs/integrating.md:%d is not a copy of %s; it should read:\n%s", b.line, ref, want)
			}
		case strings.HasPrefix(b.directive, "run"):
			runs = append(runs, b)
		default:
			t.Errorf("docs/integrating.md:%d: a code block with no <!-- file: ... --> or <!-- run ... --> above it", b.line)
		}
	}
	if len(runs) < 5 {
		t.Fatalf("found %d shell recipes, want at least 5", len(runs))
	}

	for _, p := range []string{"socat", "curl", "jq"} {
		stepuptest.RequireProgram(t, p)
	}
	a := stepuptest.Start(t, stepuptest.Options{})
	a.EnrollTOTP(t, 4)
	bin := filepath.Dir(stepuptest.Build(t, "stepupctl"))
	stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd")
	stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletctl")
	env := append(a.Env(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	// walletd on its default kind of address: a Unix socket of the user's.
	wdir, err := os.MkdirTemp("", "walletd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wdir) })
	wsock := filepath.Join(wdir, "walletd.sock")
	url := startWalletd(t, filepath.Join(bin, "walletd"), env, "unix:"+wsock)
	env = append(env, "WALLETD_URL="+url, "WALLETD_SOCK="+wsock)
	first := firstWalletOn(t, wsock)

	// The attacker: another uid reading every process's command line
	// while the recipes run (issue 11 item 6). And, exhaustively, every
	// command line the recipes exec, from strace.
	spy := startCmdlineSpy(t)
	strace := stepuptest.RequireProgram(t, "strace")
	for _, b := range runs {
		t.Run("line "+strconv.Itoa(b.line), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			opts := map[string]string{}
			spec, _, _ := strings.Cut(strings.TrimPrefix(b.directive, "run"), " : ")
			for _, f := range strings.Fields(spec) {
				k, v, _ := strings.Cut(f, "=")
				opts[k] = v
			}
			for _, s := range strings.Split(opts["stepup"], ",") {
				if s != "" {
					// As a person would, with stepupctl prompt in the
					// same session as the recipe: the token is bound
					// to stepupctl there (bind: client), which is the
					// program the recipe then asks with stepupctl token.
					code, err := a.Code(ctx)
					if err != nil {
						t.Fatal(err)
					}
					args := []string{"prompt", "--stdin", "--method", "totp"}
					if opts["details"] == "wallet_export" {
						// What walletd's export of its first wallet
						// states, as the recipe's --detail flags do.
						args = append(args, "--detail", "type=wallet_export", "--detail", "address="+first)
					}
					pc := exec.CommandContext(ctx, filepath.Join(bin, "stepupctl"), append(args, s)...)
					pc.Env, pc.Stdin = env, strings.NewReader(code+"\n")
					if out, err := pc.CombinedOutput(); err != nil {
						t.Fatalf("stepupctl prompt --stdin %s: %v\n%s", s, err, out)
					}
				}
			}
			var stdin strings.Builder
			n, _ := strconv.Atoi(opts["codes"])
			for i := 0; i < n; i++ {
				code, err := a.Code(ctx)
				if err != nil {
					t.Fatal(err)
				}
				stdin.WriteString(code + "\n")
			}
			trace := filepath.Join(t.TempDir(), "execve")
			cmd := exec.CommandContext(ctx, strace, "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-o", trace,
				"bash", "-euo", "pipefail", "-c", b.body)
			cmd.Env = env
			cmd.Stdin = strings.NewReader(stdin.String())
			out, err := cmd.CombinedOutput()
			status := 0
			if ee, ok := err.(*exec.ExitError); ok {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			want, _ := strconv.Atoi(opts["status"])
			if status != want {
				t.Fatalf("exit status %d, want %d; output:\n%s", status, want, out)
			}
			if re := opts["want"]; re != "" && !regexp.MustCompile("(?m)"+re).Match(out) {
				t.Fatalf("output does not match %s:\n%s", re, out)
			}
			t.Logf("%s", out)
			execs, err := os.ReadFile(trace)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(execs), "\n") {
				if jwtRE.MatchString(l) {
					t.Errorf("a token is on a command line, readable by every local user: %s", l)
				}
			}
		})
	}
	// The machine may run other agents' tests meanwhile: count only
	// tokens signed by this test's agent (their header's kid).
	ours := agentKids(t, a)
	var leaked []string
	for _, tok := range spy() {
		if ours[kidOf(tok)] {
			leaked = append(leaked, tok)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("another user read %d token(s) of this agent from /proc/*/cmdline during the recipes: %q", len(leaked), leaked)
	}
}

// agentKids are the key IDs of the agent's signing keys.
func agentKids(t *testing.T, a *stepuptest.Agent) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := a.Client.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks %s: %v", raw, err)
	}
	kids := map[string]bool{}
	for _, k := range set.Keys {
		kids[k.Kid] = true
	}
	return kids
}

// kidOf is the kid in a compact JWS's header ("" when unreadable).
func kidOf(tok string) string {
	h, _, _ := strings.Cut(tok, ".")
	data, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return ""
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	json.Unmarshal(data, &hdr)
	return hdr.Kid
}

// jwtRE matches a compact JWS (an elevated token) anywhere in a line.
var jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

// startCmdlineSpy runs, as nobody (setpriv; the tests run as root), a
// loop that reads /proc/*/cmdline and keeps whatever looks like a token.
// The returned func stops it and returns what it saw. Not root: the spy
// runs as this user, which can read the same files.
func startCmdlineSpy(t *testing.T) func() []string {
	t.Helper()
	loop := `while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n' | grep -a -o -E 'eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+' ; done`
	argv := []string{"sh", "-c", loop}
	if os.Getuid() == 0 {
		argv = append([]string{stepuptest.RequireProgram(t, "setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out testenv.LockedBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() []string {
		if !stopped {
			stopped = true
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
		return strings.Fields(out.String())
	}
	t.Cleanup(func() { stop() })
	return stop
}

// firstWalletOn is the address of the first wallet of the walletd on the
// Unix socket sock.
func firstWalletOn(t *testing.T, sock string) string {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://walletd/balance")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b struct {
		Address string `json:"address"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || b.Address == "" {
		t.Fatalf("walletd's GET /balance: %v %+v", err, b)
	}
	return b.Address
}

func startWalletd(t *testing.T, bin string, env []string, listen string) string {
	t.Helper()
	cmd := exec.Command(bin, "-listen", listen)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case l := <-line:
		u, ok := strings.CutPrefix(l, "walletd listening on ")
		if !ok {
			t.Fatalf("walletd said %q", l)
		}
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("walletd did not start")
	}
	return ""
}
