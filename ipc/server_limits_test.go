package ipc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoOK sends one echo request on c and checks its answer.
func echoOK(t *testing.T, c net.Conn, r *bufio.Reader, id string) {
	t.Helper()
	fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%q,"method":"echo","params":1}`+"\n", id)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil || line != fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"result":1}`+"\n", id) {
		t.Fatalf("echo %s: %q, %v", id, line, err)
	}
}

// readRefusal reads the one line a refused connection gets, then EOF.
func readRefusal(t *testing.T, c net.Conn) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("refused connection: no error line: %q, %v", line, err)
	}
	var m struct {
		ID    any            `json:"id"`
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal([]byte(line), &m); err != nil || m.Error == nil {
		t.Fatalf("refusal %q is not an error line: %v", line, err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a refused connection stays open")
	}
	return m.Error
}

// Slowloris: connections that dribble a line a byte at a time, never
// ending it, are closed by the line deadline with an error line, while a
// normal client is served throughout.
func TestSlowLineClosedByDeadline(t *testing.T) {
	path, _ := startServerWith(t, &testHandler{}, func(s *Server) { s.LineTimeout = 700 * time.Millisecond })
	var slow []net.Conn
	for i := 0; i < 20; i++ {
		slow = append(slow, dial(t, path))
	}
	normal := dial(t, path)
	nr := bufio.NewReader(normal)
	closed := make(chan string, len(slow))
	for _, c := range slow {
		go func(c net.Conn) {
			r := bufio.NewReader(c)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, _ := r.ReadString('\n')
			_, err := r.ReadString('\n')
			if err == nil {
				line = "still open: " + line
			}
			closed <- line
		}(c)
	}
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		msg := `{"jsonrpc":"2.0","id":1,"method":"echo","params":"` + strings.Repeat("x", 100)
		for i := 0; ; i++ {
			for _, c := range slow {
				c.Write([]byte{msg[i%len(msg)]})
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	defer close(stop)
	for i := 0; i < 10; i++ {
		echoOK(t, normal, nr, fmt.Sprint("n", i))
		time.Sleep(50 * time.Millisecond)
	}
	for range slow {
		line := <-closed
		if !strings.Contains(line, `"code":-32600`) || !strings.Contains(line, "no complete request line") {
			t.Fatalf("a slow connection ended with %q", line)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("slow connections closed after %v", d)
	}
	// A client that writes whole lines, slowly, is never cut.
	for i := 0; i < 3; i++ {
		time.Sleep(400 * time.Millisecond)
		echoOK(t, normal, nr, fmt.Sprint("late", i))
	}
}

// A line that arrives in pieces within the deadline is served, and the
// deadline of one line does not carry over to the next.
func TestLineInPiecesServed(t *testing.T) {
	path, _ := startServerWith(t, &testHandler{}, func(s *Server) { s.LineTimeout = 500 * time.Millisecond })
	c := dial(t, path)
	r := bufio.NewReader(c)
	for i := 0; i < 4; i++ {
		req := fmt.Sprintf(`{"jsonrpc":"2.0","id":"p%d","method":"echo","params":1}`+"\n", i)
		c.Write([]byte(req[:10]))
		time.Sleep(300 * time.Millisecond)
		c.Write([]byte(req[10:]))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil || !strings.Contains(line, fmt.Sprintf(`"p%d"`, i)) {
			t.Fatalf("line %d: %q, %v", i, line, err)
		}
	}
}

// Past the per-process cap a connection gets a 4003 error line and is
// closed; the connections already open, and other processes, are served.
func TestPerPeerConnectionCap(t *testing.T) {
	path, _ := startServerWith(t, &testHandler{}, func(s *Server) { s.MaxConnsPerPeer = 3 })
	var open []net.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, path)
		echoOK(t, c, bufio.NewReader(c), fmt.Sprint("c", i)) // accepted
		open = append(open, c)
	}
	e := readRefusal(t, dial(t, path))
	data, _ := e["data"].(map[string]any)
	if e["code"] != float64(4003) || data["reason"] != "rate_limited" || data["hint"] == nil || data["retryAfterSeconds"] != float64(1) ||
		!strings.Contains(e["message"].(string), "too many connections from this process") {
		t.Fatalf("refusal = %v", e)
	}
	// Another process is served.
	socat := testenv.Program(t, "socat")
	cmd := exec.Command(socat, "-t", "2", "-", "UNIX-CONNECT:"+path)
	cmd.Stdin = strings.NewReader(`{"jsonrpc":"2.0","id":"other","method":"echo","params":1}` + "\n")
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), `"id":"other","result":1`) {
		t.Fatalf("another process: %q, %v", out, err)
	}
	for i, c := range open {
		echoOK(t, c, bufio.NewReader(c), fmt.Sprint("again", i))
	}
	// Closing one makes room.
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, path)
		fmt.Fprintf(c, `{"jsonrpc":"2.0","id":"room","method":"echo","params":1}`+"\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if strings.Contains(line, `"result"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a close: %q", line)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Past the global cap every process is refused with the error line.
func TestGlobalConnectionCap(t *testing.T) {
	path, _ := startServerWith(t, &testHandler{}, func(s *Server) { s.MaxConns = 4 })
	for i := 0; i < 4; i++ {
		c := dial(t, path)
		echoOK(t, c, bufio.NewReader(c), fmt.Sprint("c", i))
	}
	e := readRefusal(t, dial(t, path))
	if e["code"] != float64(4003) || !strings.Contains(e["message"].(string), "the agent has 4 open") {
		t.Fatalf("refusal = %v", e)
	}
}

// Out of descriptors (a low ulimit -n): a client gets an error line
// instead of waiting in the listen queue, and the server serves again once
// descriptors are free. The server runs in a process of its own (this
// test binary again) with RLIMIT_NOFILE at 32.
// startHelperServer runs this test binary's helper test (a server in a
// process of its own) with env, stops it when t ends, and waits for its
// socket, the path in env's first entry.
func startHelperServer(t *testing.T, helper string, env ...string) *exec.Cmd {
	t.Helper()
	_, path, _ := strings.Cut(env[0], "=")
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return cmd
		}
		if i == 100 {
			t.Fatal("helper server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEMFILERefusedThenRecovered(t *testing.T) {
	if os.Getenv("STEPUP_IPC_EMFILE_SERVER") != "" {
		return
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	startHelperServer(t, "TestEMFILEServerHelper", "STEPUP_IPC_EMFILE_SERVER="+path)
	var conns []net.Conn
	var refusal string
	for i := 0; i < 64 && refusal == ""; i++ {
		c := dial(t, path)
		fmt.Fprintf(c, `{"jsonrpc":"2.0","id":1,"method":"echo","params":1}`+"\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("connection %d: no answer at all: %v", i, err)
		}
		if strings.Contains(line, "file descriptors") {
			refusal = line
			c.Close()
			continue
		}
		conns = append(conns, c)
	}
	if !strings.Contains(refusal, `"code":4003`) || !strings.Contains(refusal, `"hint"`) {
		t.Fatalf("after %d connections, refusal = %q", len(conns), refusal)
	}
	t.Logf("%d connections served, then: %s", len(conns), refusal)
	// Still refusing, with the line, not hanging.
	readRefusal(t, dial(t, path))
	for _, c := range conns[:4] {
		c.Close()
	}
	// A client that retries as told is served once the agent has closed
	// its ends of them.
	for i := 0; ; i++ {
		c := dial(t, path)
		fmt.Fprintf(c, `{"jsonrpc":"2.0","id":"after","method":"echo","params":1}`+"\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && strings.Contains(line, `"result"`) {
			t.Logf("served again after %d retries", i)
			break
		}
		if i == 30 {
			t.Fatalf("not served again after closing connections: %q, %v", line, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range conns[4:] {
		echoOK(t, c, bufio.NewReader(c), "still")
	}
}

// TestEMFILEServerHelper is the server of TestEMFILERefusedThenRecovered.
func TestEMFILEServerHelper(t *testing.T) {
	path := os.Getenv("STEPUP_IPC_EMFILE_SERVER")
	if path == "" {
		t.Skip("helper process only")
	}
	lim := syscall.Rlimit{Cur: 32, Max: 32}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: &testHandler{}, UID: -1}
	srv.Serve(ln)
}

// Clients connecting past the global cap faster than they read their
// refusal cannot make the server hold descriptors past the cap: at most
// maxRefusing refused connections are held while they drain, the rest are
// answered and closed at once. Every refused client still reads its 4003
// line, and the clients within the cap are still served. The server runs
// in a process of its own, whose descriptors the test counts in /proc.
func TestRefusedConnectionsHoldNoDescriptors(t *testing.T) {
	if os.Getenv("STEPUP_IPC_CAP_SERVER") != "" {
		return
	}
	const maxConns, flood = 16, 600
	path := filepath.Join(t.TempDir(), "s.sock")
	cmd := startHelperServer(t, "TestCapServerHelper", "STEPUP_IPC_CAP_SERVER="+path, fmt.Sprintf("STEPUP_IPC_CAP=%d", maxConns))
	fds := func() int {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
		return len(ents)
	}
	var held []net.Conn
	var readers []*bufio.Reader
	for i := 0; i < maxConns; i++ {
		c := dial(t, path)
		r := bufio.NewReader(c)
		echoOK(t, c, r, fmt.Sprint("held", i))
		held, readers = append(held, c), append(readers, r)
	}
	base := fds()
	stop := make(chan struct{})
	peak := make(chan int)
	go func() {
		m := 0
		for {
			select {
			case <-stop:
				peak <- m
				return
			default:
			}
			m = max(m, fds())
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// The flood: connections that neither write nor read.
	var refused []net.Conn
	for i := 0; i < flood; i++ {
		refused = append(refused, dial(t, path))
	}
	time.Sleep(500 * time.Millisecond) // well within a refusal's drain (1s)
	close(stop)
	p := <-peak
	t.Logf("server descriptors: %d with %d connections held; at most %d while %d more were refused", base, maxConns, p, flood)
	if p > base+maxRefusing+8 {
		t.Fatalf("the server held %d descriptors while refusing %d connections: %d past the %d it had at the cap (refusals drain at most %d)",
			p, flood, p-base, base, maxRefusing)
	}
	for i, c := range refused {
		if e := readRefusal(t, c); e["code"] != float64(4003) {
			t.Fatalf("refused connection %d: %v", i, e)
		}
	}
	for i, c := range held {
		echoOK(t, c, readers[i], fmt.Sprint("again", i))
	}
}

func TestCapServerHelper(t *testing.T) {
	path := os.Getenv("STEPUP_IPC_CAP_SERVER")
	if path == "" {
		t.Skip("helper process only")
	}
	var n int
	fmt.Sscan(os.Getenv("STEPUP_IPC_CAP"), &n)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: &testHandler{}, UID: -1, MaxConns: n}
	srv.Serve(ln)
}
