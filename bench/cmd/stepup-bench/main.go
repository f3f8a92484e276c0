//go:build linux

// Command stepup-bench measures stepup-agent side by side with OpenSSH's
// ssh-agent, gpg-agent and a minimal C echo server (the floor) over Unix
// sockets, in one run, and writes docs/BENCHMARKS.md:
//
//	go run ./bench/cmd/stepup-bench -o docs/BENCHMARKS.md
//
// and load tests the agent under many connections, slow and idle clients
// (load.go, docs/RELIABILITY.md):
//
//	go run ./bench/cmd/stepup-bench load -conns 1000 -n 1000000 -pipeline 16
//
// It builds stepup-agent and stepupctl from this tree and bench/echo.c
// with gcc, starts every server in a temporary directory with its own
// XDG directories and GNUPGHOME, and stops them (by pid) when done. It
// needs ssh-agent, ssh-add, ssh-keygen, gpg-agent, gpgconf and gcc;
// hyperfine is used when installed. Linux only (/proc, sched_setaffinity).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type config struct {
	rounds    int
	latN      int
	connN     int
	conns     int
	tputDur   time.Duration
	procRuns  int
	procRound int
	tokens    int
	out       string
	extra     []string // NAME=COMMAND: more line-protocol servers, for A/B runs
	only      onlyFlag // "requests": no whole-process or memory part; "memory": the agent's memory only
}

// onlyFlag is -only (the request measures) or -only=requests|memory.
type onlyFlag string

func (o *onlyFlag) String() string   { return string(*o) }
func (o *onlyFlag) IsBoolFlag() bool { return true }
func (o *onlyFlag) Set(v string) error {
	switch v {
	case "true", "requests":
		*o = "requests"
	case "false":
		*o = ""
	case "memory":
		*o = "memory"
	default:
		return fmt.Errorf("want -only, -only=requests or -only=memory")
	}
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if sub := map[string]func([]string) error{"load": loadMain, "load-idle": loadIdleMain, "chaos": chaosMain}; len(os.Args) > 1 && sub[os.Args[1]] != nil {
		f := sub[os.Args[1]]
		if err := f(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "stepup-bench %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	var c config
	quick := flag.Bool("quick", false, "a short run, to try the harness (figures are rough)")
	flag.StringVar(&c.out, "o", "", "write the report to `FILE` (default: stdout); sections \"## Keychain\" and \"## Notes\" already in FILE are kept")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds of each measure; the report gives their median")
	flag.IntVar(&c.latN, "n", 50000, "requests per latency round")
	flag.IntVar(&c.connN, "connects", 4000, "connections per connect-per-request round")
	flag.IntVar(&c.conns, "conns", 64, "concurrent connections for throughput")
	flag.DurationVar(&c.tputDur, "duration", 2*time.Second, "length of a throughput round")
	flag.IntVar(&c.procRuns, "runs", 100, "runs of each command per whole-process round")
	flag.IntVar(&c.tokens, "tokens", 10000, "live tokens for the memory measure")
	var extra multiFlag
	flag.Var(&extra, "extra", "also measure `NAME=COMMAND`, a server speaking stepup-agent's protocol (or echoing lines); {sock} in COMMAND is its socket path; repeatable (A/B runs of two builds)")
	flag.Var(&c.only, "only", "`-only` (or -only=requests): only the request measures (latency, CPU, throughput, connect), no report targets for the skipped ones; "+
		"-only=memory: only stepup-agent's memory (idle, after the same request rounds run against it alone, with -tokens live tokens)")
	flag.Parse()
	c.extra = extra
	if *quick {
		c.rounds, c.latN, c.connN, c.tputDur, c.procRuns = 2, 5000, 500, 500*time.Millisecond, 20
	}
	c.procRound = 3
	if *quick {
		c.procRound = 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &c); err != nil {
		fmt.Fprintf(os.Stderr, "stepup-bench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "stepup-bench: "+format+"\n", args...)
}

// moduleRoot finds the stepup-agent checkout the harness runs in.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/stepup-agent/stepup-agent\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the stepup-agent checkout")
		}
		dir = parent
	}
}

func runCmd(ctx context.Context, dir string, timeout time.Duration, argv ...string) error {
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(c, argv[0], argv[1:]...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// results is everything the report needs.
type results struct {
	cfg       *config
	started   time.Time
	elapsed   time.Duration
	machine   machineInfo
	servers   []string // names, in report order
	requests  map[string]string
	lat       map[string][]latencyResult
	conn      map[string][]connectResult
	tput      map[string][]throughputResult
	rssIdle   map[string]memStat
	rssLoaded map[string]memStat
	rssNext   map[string]memStat // after rssLoaded and one more request
	proc      []procResult
	procTool  string
	mem       memResult
}

const (
	nameAgent  = "stepup-agent"
	nameEcho   = "echo (C, floor)"
	nameGoEcho = "echo (Go net)"
	nameSSH    = "ssh-agent"
	nameGPG    = "gpg-agent"
)

func run(ctx context.Context, c *config) error {
	if runtime.GOOS != "linux" {
		return errors.New("the harness reads /proc and pins threads: Linux only")
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	for _, p := range []string{"gcc", "ssh-agent", "ssh-add", "ssh-keygen", "gpg-agent", "gpgconf", "gpg-connect-agent"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s is not installed (Debian: apt-get install gcc openssh-client gpg-agent)", p)
		}
	}
	res := &results{cfg: c, started: time.Now().UTC(), machine: machine(ctx),
		requests: map[string]string{}, lat: map[string][]latencyResult{}, conn: map[string][]connectResult{},
		tput: map[string][]throughputResult{}, rssIdle: map[string]memStat{}, rssLoaded: map[string]memStat{}, rssNext: map[string]memStat{}}

	dir, err := socketDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bin")
	logf("building stepup-agent, stepupctl and bench/echo.c in %s", dir)
	if err := runCmd(ctx, root, 5*time.Minute, "go", "build", "-o", bin+"/", "./bench/goecho"); err != nil {
		return err
	}
	// stepup-agent and stepupctl are built as they are shipped on Linux:
	// without cgo, static binaries that skip the dynamic loader (README,
	// "Install"; packaging/install.sh).
	if err := runCmd(ctx, root, 5*time.Minute, "env", "CGO_ENABLED=0", "go", "build", "-o", bin+"/", "./cmd/stepup-agent", "./cmd/stepupctl", "./cmd/stepupctl-inspect"); err != nil {
		return err
	}
	if err := runCmd(ctx, root, time.Minute, "gcc", "-O2", "-o", filepath.Join(bin, "echo"), "bench/echo.c"); err != nil {
		return err
	}
	env := benchEnv(dir)
	for _, d := range []string{"config", "state", "run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}

	var servers []*server
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	add := func(s *server, err error) error {
		if err != nil {
			return err
		}
		servers = append(servers, s)
		res.servers = append(res.servers, s.name)
		res.requests[s.name] = s.proto.label
		return nil
	}
	if err := add(startAgent(ctx, filepath.Join(bin, "stepup-agent"), dir, nameAgent, "memory", env)); err != nil {
		return err
	}
	memOnly := c.only == "memory"
	// -only=memory measures the agent alone.
	if !memOnly {
		if err := add(startEcho(ctx, filepath.Join(bin, "echo"), dir, env)); err != nil {
			return err
		}
		if err := add(startChild(ctx, nameGoEcho, filepath.Join(dir, "goecho.sock"), &protoGoEcho, env,
			filepath.Join(dir, "goecho.log"), filepath.Join(bin, "goecho"), filepath.Join(dir, "goecho.sock"))); err != nil {
			return err
		}
		if err := add(startSSHAgent(ctx, dir, env)); err != nil {
			return err
		}
		if err := add(startGPGAgent(ctx, dir, env)); err != nil {
			return err
		}
		for i, e := range c.extra {
			name, cmdline, ok := strings.Cut(e, "=")
			if !ok {
				return fmt.Errorf("-extra %q: want NAME=COMMAND", e)
			}
			sock := filepath.Join(dir, fmt.Sprintf("extra%d.sock", i))
			argv := strings.Fields(strings.ReplaceAll(cmdline, "{sock}", sock))
			if err := add(startChild(ctx, name, sock, &protoExtra, env, filepath.Join(dir, fmt.Sprintf("extra%d.log", i)), argv...)); err != nil {
				return err
			}
		}
	}
	time.Sleep(time.Second)
	for _, s := range servers {
		res.rssIdle[s.name], _ = rssOf(s.pid)
	}

	cpu := runtime.NumCPU() - 1
	for r := 0; r < c.rounds; r++ {
		// Rotate the order so that a noisy moment does not always hit
		// the same server.
		order := append(slices.Clone(servers[r%len(servers):]), servers[:r%len(servers)]...)
		for _, s := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			l, err := latency(s, cpu, c.latN/10, c.latN)
			if err != nil {
				return fmt.Errorf("%s: latency: %w", s.name, err)
			}
			res.lat[s.name] = append(res.lat[s.name], l)
			cr, err := connectPerRequest(s, cpu, c.connN)
			if err != nil {
				return fmt.Errorf("%s: connect per request: %w", s.name, err)
			}
			res.conn[s.name] = append(res.conn[s.name], cr)
			t, err := throughput(s, c.conns, c.tputDur/5, c.tputDur)
			if err != nil {
				return fmt.Errorf("%s: throughput: %w", s.name, err)
			}
			res.tput[s.name] = append(res.tput[s.name], t)
			logf("round %d/%d %-16s p50 %6.1fus  cpu/req %5.2fus  %8.0f req/s  connect %6.1fus",
				r+1, c.rounds, s.name, us(l.p50), us(l.cpuPerReq), t.rps, us(cr.p50))
		}
	}
	// Every server is read 2 s after its last client is gone, as idle
	// is read a second after its first answer (the agent hands freed
	// heap back a second after its last connection closes).
	time.Sleep(2 * time.Second)
	for _, s := range servers {
		res.rssLoaded[s.name], _ = rssOf(s.pid)
		logf("after the rounds %-16s RSS %.1f MiB, anonymous %.1f MiB", s.name,
			float64(res.rssLoaded[s.name].rss)/(1<<20), float64(res.rssLoaded[s.name].anon)/(1<<20))
	}
	// Then one more request each: what a server at rest maps again to
	// answer (stepup-agent unmaps the code a burst ran when it trims).
	buf := make([]byte, 64<<10)
	for _, s := range servers {
		if err := requestOnce(s, buf); err != nil {
			return fmt.Errorf("%s: a request after the rounds: %w", s.name, err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	for _, s := range servers {
		res.rssNext[s.name], _ = rssOf(s.pid)
	}

	if c.only == "requests" {
		res.elapsed = time.Since(res.started)
		report(os.Stdout, res, "")
		return nil
	}
	if !memOnly {
		logf("whole process: stepupctl check wallet:export vs ssh-add -l and gpg-connect-agent")
	}
	sockOf := func(name string) string {
		for _, s := range servers {
			if s.name == name {
				return s.sock
			}
		}
		return ""
	}
	if !memOnly {
		res.proc, res.procTool, err = wholeProcess(ctx, c, env, filepath.Join(bin, "stepupctl"), sockOf(nameAgent), sockOf(nameSSH), sockOf(nameGPG))
		if err != nil {
			return err
		}
	}
	for _, s := range servers {
		s.stop()
	}
	servers = nil

	logf("memory: an agent holding %d live tokens", c.tokens)
	res.mem, err = memory(ctx, filepath.Join(bin, "stepup-agent"), c.tokens)
	if err != nil {
		return err
	}
	res.elapsed = time.Since(res.started)

	var w io.Writer = os.Stdout
	var keep string
	if memOnly {
		report(w, res, "")
		logf("done in %s", res.elapsed.Round(time.Second))
		return nil
	}
	if c.out != "" {
		if old, err := os.ReadFile(c.out); err == nil {
			keep = keptSections(string(old))
		}
		f, err := os.Create(c.out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	report(w, res, keep)
	logf("done in %s", res.elapsed.Round(time.Second))
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
