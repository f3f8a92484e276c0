//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pquerna/otp/totp"
)

// The load subcommand (docs/RELIABILITY.md):
//
//	go run ./bench/cmd/stepup-bench load -conns 1000 -n 1000000 -pipeline 16
//
// It builds and starts an agent of this tree in a temporary directory
// (or uses -sock with -pid), enrolls a TOTP credential, mints a multi-use
// token through the custom-UI path with codes it computes, then runs a
// fixed count of requests over N connections, checking every answer.

type loadConfig struct {
	sock, agentBin  string
	pid             int
	conns, n        int
	pipeline        int
	duration        time.Duration
	mix             string
	slow            int
	slowEvery       time.Duration
	baseline        bool
	rounds          int
	idle, idleProcs int
	keychain        string
	sample          time.Duration
	stepups         bool
	agentArgs       multiFlag
	rewrites        int
	rewriteMode     string
	policyPath      string
}

type loadStats struct {
	sent, answered atomic.Int64
	wrong          atomic.Int64
	mu             sync.Mutex
	byCode         map[string]int
	lat            []time.Duration
	firstWrong     string
}

func (s *loadStats) addErr(key string) {
	s.mu.Lock()
	s.byCode[key]++
	s.mu.Unlock()
}

func (s *loadStats) wrongAnswer(what string) {
	if s.wrong.Add(1) == 1 {
		s.mu.Lock()
		s.firstWrong = what
		s.mu.Unlock()
	}
}

func loadMain(args []string) error {
	var c loadConfig
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	fs.StringVar(&c.sock, "sock", "", "use the agent at `PATH` (with -pid) instead of starting one")
	fs.IntVar(&c.pid, "pid", 0, "the pid of the -sock agent, for its RSS and descriptors")
	fs.IntVar(&c.conns, "conns", 64, "concurrent connections")
	fs.IntVar(&c.n, "n", 100000, "requests in all")
	fs.IntVar(&c.pipeline, "pipeline", 1, "requests in flight per connection (1: not pipelined)")
	fs.DurationVar(&c.duration, "duration", 5*time.Minute, "stop after this even if requests remain")
	fs.StringVar(&c.mix, "mix", "isStepUpRequired=40,getToken=20,verifyToken=15,verifyConsume=10,status=5,free=10", "methods and weights")
	fs.IntVar(&c.slow, "slow", 0, "slowloris connections (a byte every -slow-every, never a full line)")
	fs.DurationVar(&c.slowEvery, "slow-every", 2*time.Second, "interval of the slowloris bytes")
	fs.BoolVar(&c.baseline, "baseline", false, "with -slow: alternate runs without and with the slow connections (-rounds of each), and compare their p99")
	fs.IntVar(&c.rounds, "rounds", 3, "with -baseline: rounds of each")
	fs.IntVar(&c.idle, "idle", 0, "idle connections opened (by -idle-procs child processes) while the load runs")
	fs.IntVar(&c.idleProcs, "idle-procs", 1, "processes the idle connections come from")
	fs.StringVar(&c.keychain, "keychain", "memory", "the started agent's --keychain")
	fs.DurationVar(&c.sample, "sample", time.Second, "interval of the RSS and descriptor samples")
	fs.BoolVar(&c.stepups, "stepups", true, "custom-UI TOTP step-ups (one per 30 s code) with a single-use token consumed and checked")
	fs.IntVar(&c.rewrites, "rewrite-policy", 0, "rewrite the started agent's policy file this many times during the load (half by rename, half in place); the policy stays equivalent, so no request may fail")
	fs.StringVar(&c.rewriteMode, "rewrite-mode", "both", "how -rewrite-policy writes: rename, inplace or both (alternating)")
	fs.Var(&c.agentArgs, "agent-arg", "an extra argument for the started agent (repeatable)")
	fs.Parse(args)
	ctx := context.Background()

	if c.sock == "" {
		dir, err := socketDir()
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		bin := filepath.Join(dir, "bin")
		if err := runCmd(ctx, root, 5*time.Minute, "go", "build", "-o", bin+"/", "./cmd/stepup-agent"); err != nil {
			return err
		}
		env := benchEnv(dir)
		pol := filepath.Join(dir, "config", "stepup", "policy.yaml")
		os.MkdirAll(filepath.Dir(pol), 0o700)
		os.WriteFile(pol, []byte(loadPolicy(0)), 0o600)
		c.policyPath = pol
		c.sock = filepath.Join(dir, "load.sock")
		argv := append([]string{filepath.Join(bin, "stepup-agent"), "-D", "-a", c.sock, "--keychain", c.keychain, "--prompter", "none",
			"--audit", filepath.Join(dir, "audit.jsonl")}, c.agentArgs...)
		s, err := startChild(ctx, "stepup-agent", c.sock, &protoAgent, env, filepath.Join(dir, "agent.log"), argv...)
		if err != nil {
			return err
		}
		defer s.stop()
		c.pid = s.pid
	}
	setup, err := loadSetup(c.sock)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	fmt.Printf("# stepup-bench load: %d connections, %d requests, pipeline %d, mix %s\n", c.conns, c.n, c.pipeline, c.mix)
	if c.baseline && c.slow > 0 {
		var base, with []float64
		for r := 0; r < c.rounds; r++ {
			fmt.Printf("## round %d without the slow connections\n", r+1)
			base = append(base, float64(runLoad(&c, setup, 0)))
			fmt.Printf("## round %d with the slow connections\n", r+1)
			with = append(with, float64(runLoad(&c, setup, c.slow)))
		}
		mb, mw := medianF(base), medianF(with)
		fmt.Printf("median p99 over %d alternating rounds: without %v, with %v; ratio %.2f\n", c.rounds, time.Duration(mb).Round(time.Microsecond), time.Duration(mw).Round(time.Microsecond), mw/mb)
		return problems.err()
	}
	runLoad(&c, setup, c.slow)
	return problems.err()
}

// problems counts what makes a load run fail: wrong answers, and errors
// the mix does not expect (it expects none).
type problemCount struct {
	mu sync.Mutex
	n  int
}

var problems problemCount

func (p *problemCount) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n > 0 {
		return fmt.Errorf("%d wrong answers or errors", p.n)
	}
	return nil
}

// setupState is what the load needs from the agent: a TOTP secret and a
// multi-use token.
type setupState struct {
	secret string
	token  string
	mu     sync.Mutex
	used   int64 // the last TOTP time step whose code was used
}

type rpc struct {
	c  net.Conn
	r  *bufio.Reader
	id int
}

func dialRPC(sock string) (*rpc, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	return &rpc{c: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

type answer struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Reason string `json:"reason"`
		} `json:"data"`
	} `json:"error"`
}

func (r *rpc) call(method string, params any, out any) error {
	r.id++
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": r.id, "method": method, "params": params})
	r.c.SetDeadline(time.Now().Add(40 * time.Second))
	if _, err := r.c.Write(append(b, '\n')); err != nil {
		return err
	}
	line, err := r.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	var a answer
	if err := json.Unmarshal(line, &a); err != nil {
		return err
	}
	if a.Error != nil {
		return fmt.Errorf("%s: %d %s", method, a.Error.Code, a.Error.Message)
	}
	if out != nil {
		return json.Unmarshal(a.Result, out)
	}
	return nil
}

// nextCode returns a TOTP code of a time step not used before, waiting
// for the next step when this one's code was used (the agent refuses a
// code twice).
func (s *setupState) nextCode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		step := time.Now().Unix() / 30
		if step > s.used {
			s.used = step
			code, _ := totp.GenerateCode(s.secret, time.Unix(step*30+1, 0))
			return code
		}
		time.Sleep(time.Until(time.Unix((step+1)*30, 0)) + 50*time.Millisecond)
	}
}

func loadSetup(sock string) (*setupState, error) {
	r, err := dialRPC(sock)
	if err != nil {
		return nil, err
	}
	defer r.c.Close()
	var en struct {
		EnrollmentID string `json:"enrollmentId"`
		Secret       string `json:"secret"`
	}
	if err := r.call("enrollStart", map[string]any{"method": "totp", "label": "stepup-bench load"}, &en); err != nil {
		return nil, err
	}
	s := &setupState{secret: en.Secret}
	if err := r.call("enrollFinish", map[string]any{"enrollmentId": en.EnrollmentID, "response": map[string]string{"code": s.nextCode()}}, nil); err != nil {
		return nil, err
	}
	tok, err := stepUp(r, s, "load:multi")
	if err != nil {
		return nil, err
	}
	s.token = tok
	return s, nil
}

// stepUp mints a token for scope through the custom-UI path.
func stepUp(r *rpc, s *setupState, scope string) (string, error) {
	var ch struct {
		ChallengeID string `json:"challengeId"`
	}
	if err := r.call("startVerification", map[string]any{"method": "totp", "requestedScopes": []string{scope}}, &ch); err != nil {
		return "", err
	}
	var tr struct {
		Token string `json:"token"`
	}
	if err := r.call("completeVerification", map[string]any{"challengeId": ch.ChallengeID, "response": map[string]string{"code": s.nextCode()}}, &tr); err != nil {
		return "", err
	}
	if tr.Token == "" {
		return "", errors.New("completeVerification: no token")
	}
	return tr.Token, nil
}

// kinds of request in the mix, with the check of their answers.
type kind struct {
	name  string
	line  func(id int, s *setupState) []byte
	check func(a *answer) string // "" when right
}

func kinds(s *setupState) map[string]kind {
	req := func(id int, method string, params any) []byte {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
		return append(b, '\n')
	}
	result := func(a *answer, v any) string {
		if a.Error != nil {
			return ""
		}
		if err := json.Unmarshal(a.Result, v); err != nil {
			return "result: " + err.Error()
		}
		return ""
	}
	return map[string]kind{
		"isStepUpRequired": {line: func(id int, s *setupState) []byte {
			return req(id, "isStepUpRequired", map[string]string{"scope": "load:multi"})
		}, check: func(a *answer) string {
			var v struct{ Required *bool }
			if m := result(a, &v); m != "" || a.Error != nil {
				return m
			}
			if v.Required == nil || *v.Required {
				return "isStepUpRequired load:multi: required while a token is held"
			}
			return ""
		}},
		"free": {line: func(id int, s *setupState) []byte {
			return req(id, "isStepUpRequired", map[string]string{"scope": "load:free"})
		}, check: func(a *answer) string {
			var v struct{ Required *bool }
			if m := result(a, &v); m != "" || a.Error != nil {
				return m
			}
			if v.Required == nil || *v.Required {
				return "isStepUpRequired load:free: required"
			}
			return ""
		}},
		"getToken": {line: func(id int, s *setupState) []byte {
			return req(id, "getToken", map[string]string{"scope": "load:multi"})
		}, check: func(a *answer) string {
			var v struct{ Token string }
			if m := result(a, &v); m != "" || a.Error != nil {
				return m
			}
			if v.Token != s.token {
				return "getToken load:multi: another token than the one held"
			}
			return ""
		}},
		"verifyToken": {line: func(id int, s *setupState) []byte {
			return req(id, "verifyToken", map[string]any{"token": s.token, "scope": "load:multi"})
		}, check: checkValid},
		"verifyConsume": {line: func(id int, s *setupState) []byte {
			return req(id, "verifyToken", map[string]any{"token": s.token, "scope": "load:multi", "consume": true})
		}, check: checkValid},
		"status": {line: func(id int, s *setupState) []byte {
			return req(id, "status", map[string]any{})
		}, check: func(a *answer) string {
			var v struct{ Version string }
			if m := result(a, &v); m != "" || a.Error != nil {
				return m
			}
			if v.Version == "" {
				return "status: no version"
			}
			return ""
		}},
	}
}

func checkValid(a *answer) string {
	if a.Error != nil {
		return ""
	}
	var v struct{ Valid bool }
	if err := json.Unmarshal(a.Result, &v); err != nil || !v.Valid {
		return "verifyToken: the held multi-use token is not valid"
	}
	return ""
}

// runLoad runs one measure and prints it; it returns the p99.
func runLoad(c *loadConfig, s *setupState, slow int) time.Duration {
	ks := kinds(s)
	var names []string
	var weights []int
	total := 0
	for _, kv := range strings.Split(c.mix, ",") {
		k, v, _ := strings.Cut(kv, "=")
		var w int
		fmt.Sscan(v, &w)
		if _, ok := ks[k]; !ok || w <= 0 {
			fmt.Fprintf(os.Stderr, "load: unknown mix entry %q\n", kv)
			os.Exit(2)
		}
		names, weights = append(names, k), append(weights, w)
		total += w
	}
	pick := func(rng *rand.Rand) kind {
		x := rng.IntN(total)
		for i, w := range weights {
			if x < w {
				return ks[names[i]]
			}
			x -= w
		}
		return ks[names[0]]
	}
	st := &loadStats{byCode: map[string]int{}}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	samples := sampleServer(c.pid, c.sample, stop, &bg)
	slowDone := startSlow(c.sock, slow, c.slowEvery, stop, &bg)
	stepDone := make(chan string, 1)
	if c.stepups {
		bg.Add(1)
		go func() { defer bg.Done(); stepDone <- stepUpLoop(c.sock, s, stop) }()
	}
	rewriteDone := make(chan string, 1)
	if c.rewrites > 0 && c.policyPath != "" {
		bg.Add(1)
		go func() { defer bg.Done(); rewriteDone <- rewritePolicy(c.policyPath, c.rewrites, c.rewriteMode, stop) }()
	}
	deadline := time.Now().Add(c.duration)
	var next atomic.Int64
	var wg, dialed sync.WaitGroup
	start := time.Now()
	for i := 0; i < c.conns; i++ {
		wg.Add(1)
		dialed.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			loadConn(c, s, st, &next, deadline, func() kind { return pick(rng) }, dialed.Done)
		}(i)
	}
	// The idle connections come once the normal clients are connected:
	// they are the "other clients" the caps must not take service from.
	dialed.Wait()
	idleDone := startIdle(c.sock, c.idle, c.idleProcs, stop, &bg)
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	bg.Wait()
	slices.Sort(st.lat)
	problems.mu.Lock()
	problems.n += int(st.wrong.Load())
	for _, v := range st.byCode {
		problems.n += v
	}
	problems.mu.Unlock()
	q := func(p float64) time.Duration {
		if len(st.lat) == 0 {
			return 0
		}
		return st.lat[min(len(st.lat)-1, int(float64(len(st.lat))*p))]
	}
	fmt.Printf("requests: %d sent, %d answered in %.1fs (%.0f/s); wrong answers: %d", st.sent.Load(), st.answered.Load(), elapsed.Seconds(), float64(st.answered.Load())/elapsed.Seconds(), st.wrong.Load())
	if st.firstWrong != "" {
		fmt.Printf(" (first: %s)", st.firstWrong)
	}
	fmt.Println()
	var codes []string
	for k, v := range st.byCode {
		codes = append(codes, fmt.Sprintf("%s: %d", k, v))
	}
	slices.Sort(codes)
	fmt.Printf("errors by code: {%s}\n", strings.Join(codes, ", "))
	fmt.Printf("latency: p50 %v, p99 %v, p99.9 %v, max %v\n", q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), q(0.999).Round(time.Microsecond), q(1).Round(time.Microsecond))
	if slow > 0 {
		fmt.Println(<-slowDone)
	}
	if c.idle > 0 {
		fmt.Println(<-idleDone)
	}
	if c.stepups {
		fmt.Println(<-stepDone)
	}
	if c.rewrites > 0 && c.policyPath != "" {
		fmt.Println(<-rewriteDone)
	}
	fmt.Println(<-samples)
	return q(0.99)
}

// loadConn runs requests on one connection until the count is reached,
// with up to c.pipeline in flight. It calls dialed once it has dialed.
func loadConn(c *loadConfig, s *setupState, st *loadStats, next *atomic.Int64, deadline time.Time, pick func() kind, dialed func()) {
	nc, err := net.Dial("unix", c.sock)
	dialed()
	if err != nil {
		st.addErr("dial: " + err.Error())
		return
	}
	defer nc.Close()
	type pending struct {
		k  kind
		at time.Time
	}
	var mu sync.Mutex
	inflight := map[int]pending{}
	slots := make(chan struct{}, c.pipeline)
	readDone := make(chan struct{})
	var lat []time.Duration
	go func() {
		defer close(readDone)
		r := bufio.NewReaderSize(nc, 64<<10)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				mu.Lock()
				n := len(inflight)
				mu.Unlock()
				if n > 0 {
					st.addErr("connection: " + err.Error())
				}
				return
			}
			now := time.Now()
			var a answer
			var id int
			if json.Unmarshal(line, &a) == nil && a.Error != nil && (len(a.ID) == 0 || string(a.ID) == "null") {
				// A line for the connection, not a request: the agent
				// refused it (a cap) or is closing it.
				st.addErr(fmt.Sprintf("%d %s (connection)", a.Error.Code, a.Error.Data.Reason))
				continue
			}
			if json.Unmarshal(line, &a) != nil || json.Unmarshal(a.ID, &id) != nil {
				st.wrongAnswer("unparsable answer: " + string(line))
				continue
			}
			mu.Lock()
			p, ok := inflight[id]
			delete(inflight, id)
			mu.Unlock()
			if !ok {
				st.wrongAnswer("answer to no request: " + string(line))
				continue
			}
			st.answered.Add(1)
			lat = append(lat, now.Sub(p.at))
			if a.Error != nil {
				st.addErr(fmt.Sprintf("%d %s", a.Error.Code, a.Error.Data.Reason))
			} else if m := p.k.check(&a); m != "" {
				st.wrongAnswer(m)
			}
			<-slots
		}
	}()
	w := bufio.NewWriterSize(nc, 16<<10)
	id := 0
send:
	for time.Now().Before(deadline) {
		if next.Add(1) > int64(c.n) {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			w.Flush()
			select {
			case slots <- struct{}{}:
			case <-readDone:
				// The agent closed the connection (refused it past a
				// cap): no answer will free a slot.
				next.Add(-1)
				break send
			}
		}
		id++
		k := pick()
		mu.Lock()
		inflight[id] = pending{k: k, at: time.Now()}
		mu.Unlock()
		st.sent.Add(1)
		if _, err := w.Write(k.line(id, s)); err != nil {
			st.addErr("write: " + err.Error())
			break
		}
		if len(slots) == cap(slots) || c.pipeline == 1 {
			w.Flush()
		}
	}
	w.Flush()
	// Wait for the answers in flight, then hang up.
	for i := 0; i < cap(slots); i++ {
		select {
		case slots <- struct{}{}:
		case <-readDone:
			i = cap(slots)
		case <-time.After(time.Until(deadline) + 30*time.Second):
			st.addErr("timeout waiting for answers")
			i = cap(slots)
		}
	}
	nc.Close()
	<-readDone
	st.mu.Lock()
	st.lat = append(st.lat, lat...)
	st.mu.Unlock()
}

// stepUpLoop mints a single-use token through the custom-UI path with
// each new TOTP code, consumes it, and checks that a second consume and a
// reuse of the code both fail.
func stepUpLoop(sock string, s *setupState, stop <-chan struct{}) string {
	r, err := dialRPC(sock)
	if err != nil {
		return "step-ups: " + err.Error()
	}
	defer r.c.Close()
	ok, bad := 0, 0
	var firstBad string
	fail := func(m string) {
		bad++
		if firstBad == "" {
			firstBad = m
		}
	}
	for {
		select {
		case <-stop:
			return fmt.Sprintf("custom-UI TOTP step-ups: %d minted, consumed once and refused a second time; %d violations %s", ok, bad, firstBad)
		default:
		}
		step := time.Now().Unix() / 30
		s.mu.Lock()
		ready := step > s.used
		s.mu.Unlock()
		if !ready {
			select {
			case <-stop:
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		tok, err := stepUp(r, s, "load:single")
		if err != nil {
			fail(err.Error())
			continue
		}
		var v struct{ Valid bool }
		if err := r.call("verifyToken", map[string]any{"token": tok, "scope": "load:single", "consume": true}, &v); err != nil || !v.Valid {
			fail(fmt.Sprintf("first consume: %v", err))
			continue
		}
		if err := r.call("verifyToken", map[string]any{"token": tok, "scope": "load:single", "consume": true}, &v); err == nil || !strings.Contains(err.Error(), "4007") {
			fail(fmt.Sprintf("second consume: %v", err))
			continue
		}
		ok++
	}
}

// sampleServer samples the agent's RSS and open descriptors until stop.
func sampleServer(pid int, every time.Duration, stop <-chan struct{}, bg *sync.WaitGroup) <-chan string {
	out := make(chan string, 1)
	if pid == 0 {
		out <- "server: no pid, no samples"
		return out
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		var series []string
		var maxRSS int64
		maxFD := 0
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			m, _ := rssOf(pid)
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			maxRSS, maxFD = max(maxRSS, m.rss), max(maxFD, len(ents))
			if i%10 == 0 {
				series = append(series, fmt.Sprintf("%.0f/%d", float64(m.rss)/(1<<20), len(ents)))
			}
			select {
			case <-stop:
				out <- fmt.Sprintf("server RSS MiB/open fds every %v: %s\nserver max RSS %s, max open fds %d", 10*every, strings.Join(series, " "), mib(maxRSS), maxFD)
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// startSlow opens n slowloris connections: each sends a request line a
// byte at a time, never its end. It reports how many the agent closed
// with the line-deadline error line, and after how long.
func startSlow(sock string, n int, every time.Duration, stop <-chan struct{}, bg *sync.WaitGroup) <-chan string {
	out := make(chan string, 1)
	if n == 0 {
		return out
	}
	var closedLine, closedOther, open atomic.Int64
	var longest atomic.Int64
	var wg sync.WaitGroup
	// Each of the n slots keeps one slow connection open for the whole
	// measure: when the agent closes one, the slot dials again.
	slot := func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			closedOther.Add(1)
			select {
			case <-stop:
				return false
			case <-time.After(every):
				return true
			}
		}
		defer c.Close()
		start := time.Now()
		got := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(c).ReadString('\n')
			got <- line
		}()
		msg := `{"jsonrpc":"2.0","id":1,"method":"status","params":{` + strings.Repeat(" ", 1<<16)
		for j := 0; ; j++ {
			select {
			case line := <-got:
				if strings.Contains(line, "no complete request line") {
					closedLine.Add(1)
				} else {
					closedOther.Add(1)
				}
				d := int64(time.Since(start))
				for o := longest.Load(); d > o && !longest.CompareAndSwap(o, d); o = longest.Load() {
				}
				return true
			case <-stop:
				open.Add(1)
				return false
			case <-time.After(every):
				c.Write([]byte{msg[j%len(msg)]})
			}
		}
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for slot() {
			}
		}()
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		wg.Wait()
		out <- fmt.Sprintf("slowloris: %d kept open throughout; closed by the line deadline with its error line: %d (the longest after %v); closed otherwise: %d; open at the end: %d",
			n, closedLine.Load(), time.Duration(longest.Load()).Round(100*time.Millisecond), closedOther.Load(), open.Load())
	}()
	return out
}

// startIdle opens n idle connections from procs child processes (this
// program again, "load-idle"), so that they count against the caps of
// other processes than the load's.
func startIdle(sock string, n, procs int, stop <-chan struct{}, bg *sync.WaitGroup) <-chan string {
	out := make(chan string, 1)
	if n == 0 {
		return out
	}
	exe, _ := os.Executable()
	type res struct {
		Open, Refused, Other, DialErr int
		FirstErr                      string
	}
	results := make(chan res, procs)
	var latest sync.Map // process index -> its last counts
	var cmds []*exec.Cmd
	for p := 0; p < procs; p++ {
		cmd := exec.Command(exe, "load-idle", sock, fmt.Sprint(n/procs))
		stdout, _ := cmd.StdoutPipe()
		cmd.Stdin = nil
		if err := cmd.Start(); err != nil {
			results <- res{Other: n / procs}
			continue
		}
		cmds = append(cmds, cmd)
		go func() {
			var last res
			dec := json.NewDecoder(stdout)
			for {
				var r res
				if err := dec.Decode(&r); err != nil {
					break
				}
				latest.Store(int64(p), r)
				last = r
			}
			results <- last
		}()
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		<-stop
		var sum res
		latest.Range(func(_, v any) bool {
			r := v.(res)
			sum.Open += r.Open
			sum.Refused += r.Refused
			sum.Other += r.Other
			sum.DialErr += r.DialErr
			if sum.FirstErr == "" {
				sum.FirstErr = r.FirstErr
			}
			return true
		})
		for _, cmd := range cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
		out <- fmt.Sprintf("idle: %d connections from %d processes: at the end %d held open, %d refused with the 4003 error line, %d could not connect, %d ended otherwise (first: %s)", n, procs, sum.Open, sum.Refused, sum.DialErr, sum.Other, sum.FirstErr)
	}()
	return out
}

// loadIdleMain is the child of startIdle: it opens n connections and
// holds them; a connection counts as refused once the agent's 4003 line
// arrives (however late: a connection still in the listen queue looks
// open until the agent accepts and refuses it). It prints the counts as
// JSON every second until killed.
func loadIdleMain(args []string) error {
	sock := args[0]
	var n int
	fmt.Sscan(args[1], &n)
	var open, refused, other, dialErr atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 256)
	go func() {
		for {
			time.Sleep(time.Second)
			e, _ := firstErr.Load().(string)
			json.NewEncoder(os.Stdout).Encode(map[string]any{"Open": open.Load(), "Refused": refused.Load(), "Other": other.Load(), "DialErr": dialErr.Load(), "FirstErr": e})
		}
	}()
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		go func() {
			c, err := net.Dial("unix", sock)
			<-sem
			if err != nil {
				dialErr.Add(1)
				firstErr.CompareAndSwap(nil, "dial: "+err.Error())
				return
			}
			open.Add(1)
			line, err := bufio.NewReader(c).ReadString('\n')
			open.Add(-1)
			if err == nil && strings.Contains(line, `"code":4003`) {
				refused.Add(1)
			} else {
				other.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("read: %q %v", line, err))
			}
			c.Close()
		}()
	}
	select {}
}

// loadPolicy is the load's policy; i changes only a comment.
func loadPolicy(i int) string {
	return fmt.Sprintf("# rewrite %d\nscopes:\n  load:multi: {ttl: 60m, singleUse: false}\n  load:single: {ttl: 60m, singleUse: true}\n  load:free: {required: false}\n", i)
}

// rewritePolicy rewrites path n times, spread over the run: odd times by
// writing a temporary file and renaming it over path (what editors do),
// even times in place (truncate and write, what a shell's > does, which
// the agent may read half-written).
func rewritePolicy(path string, n int, mode string, stop <-chan struct{}) string {
	done := 0
	for i := 1; i <= n; i++ {
		select {
		case <-stop:
			return fmt.Sprintf("policy file rewritten %d of %d times before the load ended", done, n)
		case <-time.After(20 * time.Millisecond):
		}
		body := []byte(loadPolicy(i))
		if mode == "rename" || mode == "both" && i%2 == 1 {
			tmp := path + ".tmp"
			if os.WriteFile(tmp, body, 0o600) == nil && os.Rename(tmp, path) == nil {
				done++
			}
		} else if os.WriteFile(path, body, 0o600) == nil {
			done++
		}
	}
	return fmt.Sprintf("policy file rewritten %d times (%s) during the load", done, map[string]string{"both": "half by rename, half in place", "rename": "by rename", "inplace": "in place"}[mode])
}
