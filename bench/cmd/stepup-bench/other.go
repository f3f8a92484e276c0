//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/peer"
	"github.com/stepup-agent/stepup-agent/token"
	"golang.org/x/sys/unix"
)

type machineInfo struct {
	nproc                                   int
	cpuModel, kernel, memTotal              string
	goVersion, ssh, gpg, gcc, hyperfine, at string
}

func firstLine(ctx context.Context, argv ...string) string {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(c, argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "(not available)"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func machine(ctx context.Context) machineInfo {
	m := machineInfo{nproc: runtime.NumCPU(), goVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m.memTotal = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	m.ssh = firstLine(ctx, "ssh", "-V")
	m.gpg = firstLine(ctx, "gpg-agent", "--version")
	m.gcc = firstLine(ctx, "gcc", "--version")
	m.hyperfine = "(not installed)"
	if _, err := exec.LookPath("hyperfine"); err == nil {
		m.hyperfine = firstLine(ctx, "hyperfine", "--version")
	}
	m.at = firstLine(ctx, "git", "describe", "--always", "--dirty")
	return m
}

// procResult is the whole-process cost of one command.
type procResult struct {
	name              string
	median            []time.Duration // one per round
	userMean, sysMean []time.Duration
	exitCode          int
}

// wholeProcess times `stepupctl check wallet:export` against `ssh-add -l`
// and `gpg-connect-agent -S SOCK NOP /bye` (one request to gpg-agent and
// its answer): with hyperfine when installed (no shell, warm-up runs),
// else by running them in turns itself.
func wholeProcess(ctx context.Context, c *config, env []string, stepupctl, agentSock, sshSock, gpgSock string) ([]procResult, string, error) {
	env = append(slices.Clone(env), "STEPUP_AUTH_SOCK="+agentSock, "SSH_AUTH_SOCK="+sshSock)
	cmds := [][]string{{stepupctl, "check", "wallet:export"}, {"ssh-add", "-l"}, {"gpg-connect-agent", "-S", gpgSock, "NOP", "/bye"}}
	out := []procResult{{name: "stepupctl check wallet:export"}, {name: "ssh-add -l"}, {name: "gpg-connect-agent NOP /bye"}}
	if _, err := exec.LookPath("hyperfine"); err == nil {
		dir, err := os.MkdirTemp("", "stepup-bench-hf-")
		if err != nil {
			return nil, "", err
		}
		defer os.RemoveAll(dir)
		for r := 0; r < c.procRound; r++ {
			jf := filepath.Join(dir, fmt.Sprintf("r%d.json", r))
			argv := []string{"hyperfine", "-N", "-i", "--style", "none", "--warmup", "10",
				"--runs", fmt.Sprint(c.procRuns), "--export-json", jf}
			// Alternate which command goes first.
			order := []int{0, 1, 2}
			if r%2 == 1 {
				order = []int{2, 1, 0}
			}
			for _, i := range order {
				argv = append(argv, strings.Join(cmds[i], " "))
			}
			hc, cancel := context.WithTimeout(ctx, 5*time.Minute)
			cmd := exec.CommandContext(hc, argv[0], argv[1:]...)
			cmd.Env = env
			o, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				return nil, "", fmt.Errorf("hyperfine: %v: %s", err, o)
			}
			var hf struct {
				Results []struct {
					Command   string    `json:"command"`
					Median    float64   `json:"median"`
					User      float64   `json:"user"`
					System    float64   `json:"system"`
					ExitCodes []int     `json:"exit_codes"`
					Times     []float64 `json:"times"`
				} `json:"results"`
			}
			b, err := os.ReadFile(jf)
			if err != nil {
				return nil, "", err
			}
			if err := json.Unmarshal(b, &hf); err != nil {
				return nil, "", fmt.Errorf("hyperfine json: %w", err)
			}
			for _, hr := range hf.Results {
				i := 0
				switch {
				case strings.HasPrefix(hr.Command, "ssh-add"):
					i = 1
				case strings.HasPrefix(hr.Command, "gpg-connect-agent"):
					i = 2
				}
				sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
				out[i].median = append(out[i].median, sec(hr.Median))
				out[i].userMean = append(out[i].userMean, sec(hr.User))
				out[i].sysMean = append(out[i].sysMean, sec(hr.System))
				if len(hr.ExitCodes) > 0 {
					out[i].exitCode = hr.ExitCodes[0]
				}
			}
		}
		return out, "hyperfine", nil
	}
	for r := 0; r < c.procRound; r++ {
		times := make([][]time.Duration, len(cmds))
		usr := make([]time.Duration, len(cmds))
		sys := make([]time.Duration, len(cmds))
		for k := 0; k < c.procRuns+10; k++ {
			for i, argv := range cmds {
				rc, cancel := context.WithTimeout(ctx, 10*time.Second)
				cmd := exec.CommandContext(rc, argv[0], argv[1:]...)
				cmd.Env = env
				t := time.Now()
				err := cmd.Run()
				d := time.Since(t)
				cancel()
				if ee, ok := err.(*exec.ExitError); ok {
					out[i].exitCode = ee.ExitCode()
				} else if err != nil {
					return nil, "", err
				}
				if k >= 10 { // warm-up
					times[i] = append(times[i], d)
					usr[i] += cmd.ProcessState.UserTime()
					sys[i] += cmd.ProcessState.SystemTime()
				}
			}
		}
		for i := range cmds {
			out[i].median = append(out[i].median, median(times[i]))
			out[i].userMean = append(out[i].userMean, usr[i]/time.Duration(c.procRuns))
			out[i].sysMean = append(out[i].sysMean, sys[i]/time.Duration(c.procRuns))
		}
	}
	return out, "own runs (hyperfine not installed)", nil
}

// memResult is the agent's resident memory with and without live tokens.
type memResult struct {
	tokens         int
	fileIdle       memStat
	fileTokens     memStat
	loadTime       time.Duration // start until the socket answers, with the tokens
	verified       bool
	keychainSizeKB int64
}

// memory starts the agent twice on the file keychain backend: once empty,
// once with n live tokens written into its keychain file beforehand,
// signed by the signing key stored in the same file, exactly as the agent
// itself persists tokens it mints (agent/persist.go). On start the agent
// loads them, checks each signature and holds them; the harness checks
// that the first and last scope need no step-up, then reads VmRSS. The
// daemon has no benchmark-only code path.
func memory(ctx context.Context, bin string, n int) (memResult, error) {
	res := memResult{tokens: n}
	one := func(n int) (memStat, time.Duration, bool, error) {
		var none memStat
		dir, err := socketDir()
		if err != nil {
			return none, 0, false, err
		}
		defer os.RemoveAll(dir)
		env := benchEnv(dir)
		for _, d := range []string{"config", "state", "run"} {
			os.Mkdir(filepath.Join(dir, d), 0o700)
		}
		if n > 0 {
			size, err := writeTokens(filepath.Join(dir, "state", "stepup"), n)
			if err != nil {
				return none, 0, false, err
			}
			res.keychainSizeKB = size >> 10
		}
		t := time.Now()
		s, err := startAgent(ctx, bin, dir, "stepup-agent-file", "file", env)
		if err != nil {
			return none, 0, false, err
		}
		defer s.stop()
		load := time.Since(t)
		ok := true
		if n > 0 {
			for _, i := range []int{0, n - 1} {
				req, err := isRequired(s.sock, benchScope(i))
				if err != nil {
					return none, 0, false, err
				}
				ok = ok && !req
			}
		}
		time.Sleep(2 * time.Second)
		r, err := rssOf(s.pid)
		return r, load, ok, err
	}
	var err error
	if res.fileIdle, _, _, err = one(0); err != nil {
		return res, err
	}
	if res.fileTokens, res.loadTime, res.verified, err = one(n); err != nil {
		return res, err
	}
	return res, nil
}

func benchScope(i int) string { return fmt.Sprintf("bench:%05d", i) }

// writeTokens writes a keychain file (keychain/file.go, version 1) with a
// signing key and n live multi-use tokens, one per scope bench:NNNNN, in
// the form agent/persist.go stores them. It returns the file's size.
func writeTokens(dir string, n int) (int64, error) {
	priv, err := token.GenerateKey()
	if err != nil {
		return 0, err
	}
	signer, err := token.NewSigner(priv)
	if err != nil {
		return 0, err
	}
	// The tokens are bound as the agent binds what it mints
	// (agent/tokens.go): to the caller that stepped up, here this
	// harness's own process, with the default bind mode, so that the
	// harness's check is admitted.
	minter, err := peer.IdentifyPID(os.Getpid())
	if err != nil {
		return 0, err
	}
	now := time.Now()
	exp := now.Add(10 * time.Minute).Truncate(time.Second)
	tokens := map[string][]byte{}
	for i := 0; i < n; i++ {
		var b [16]byte
		rand.Read(b[:])
		jti := base64.RawURLEncoding.EncodeToString(b[:])
		scope := benchScope(i)
		claims := api.Claims{Issuer: "stepup-agent", Subject: "bench", Scope: scope, ID: jti,
			IssuedAt: now.Unix(), Expiry: exp.Unix(), AuthTime: now.Unix(), AMR: []string{"otp"}}
		token.SetBinding(&claims, api.TOTP, nil, nil)
		tok, err := signer.Mint(claims)
		if err != nil {
			return 0, err
		}
		// The fields of agent.held.
		item, _ := json.Marshal(map[string]any{"jti": jti, "token": tok, "scopes": []string{scope},
			"expiresAt": exp, "singleUse": false, "method": api.TOTP,
			"minter": minter, "bind": []peer.Mode{peer.DefaultMode}})
		tokens[jti] = item
	}
	content := map[string]any{"version": 1, "items": map[string]map[string][]byte{
		keychain.KindKey:   {"signing": priv.Seed()},
		keychain.KindToken: tokens,
	}}
	b, err := json.Marshal(content)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	return int64(len(b)), os.WriteFile(filepath.Join(dir, keychain.FileName), b, 0o600)
}

// isRequired asks the agent at sock whether scope needs step-up.
func isRequired(sock, scope string) (bool, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return true, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": api.MethodIsStepUpRequired,
		"params": api.ScopeParams{Scope: scope}})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return true, err
	}
	buf := make([]byte, 64<<10)
	b, err := readAnswer(c, buf, lineComplete)
	if err != nil {
		return true, err
	}
	var resp struct {
		Result *api.StepUpRequired `json:"result"`
		Error  *api.Error          `json:"error"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(b), &resp); err != nil {
		return true, err
	}
	if resp.Error != nil || resp.Result == nil {
		return true, fmt.Errorf("isStepUpRequired %s: %s", scope, b)
	}
	return resp.Result.Required, nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
