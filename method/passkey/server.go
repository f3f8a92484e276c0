package passkey

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/stepup-agent/stepup-agent/api"
	"go.uber.org/zap"
)

//go:embed static
var static embed.FS

// fill returns page with each {{.KEY}} replaced by its value, escaped for
// HTML text and double-quoted attribute values, the only places the
// pages put them. Not html/template: text/template's reflective method
// calls make the linker keep every exported method in the daemon
// (docs/BENCHMARKS.md, "Notes"), and two fixed pages need no template
// language.
func fill(page string, kv ...string) string {
	r := make([]string, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		r = append(r, "{{."+kv[i]+"}}", html.EscapeString(kv[i+1]))
	}
	return strings.NewReplacer(r...).Replace(page)
}

type kind int

const (
	kindCreate kind = iota + 1
	kindGet
)

func (k kind) String() string {
	if k == kindCreate {
		return "create"
	}
	return "get"
}

// ceremony is one enrollment or verification: its page, its WebAuthn
// session and the result the page posted. It is the state the agent
// holds between Start and Complete.
type ceremony struct {
	kind   kind
	token  string
	url    string
	origin string
	srv    *server
	// customUI: started by startVerification; the client shows the
	// page, so the Ask names its address (set once, before the agent
	// sees the ceremony).
	customUI bool

	openOnce sync.Once
	ended    chan struct{} // closed by server.end
	postedCh chan struct{} // closed when the page posted
	outcome  chan error    // Complete's verdict, for the page

	mu      sync.Mutex
	ready   bool // setup done
	opts    json.RawMessage
	session webauthn.SessionData
	user    *wUser
	label   string
	served  bool
	bind    string // the cookie the page's first load set; required on its POST
	// launcher is the private file the browser is opened on (open.go),
	// made on first need, removed once the page is served.
	launcher string
	posted   []byte
	used     bool
	expired  bool
	timer    *time.Timer
}

func (c *ceremony) setup(opts json.RawMessage, s webauthn.SessionData, u *wUser, label string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts, c.session, c.user, c.label, c.ready = opts, s, u, label, true
}

// wait blocks until the page posted, the ceremony ended or ctx is done.
func (c *ceremony) wait(ctx context.Context) ([]byte, string, error) {
	select {
	case <-c.postedCh:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.posted, c.origin, nil
	case <-c.ended:
		c.mu.Lock()
		expired := c.expired
		c.mu.Unlock()
		if expired {
			return nil, "", api.Errorf(api.CodeTimeout, "passkey: the browser page expired before the passkey was used")
		}
		return nil, "", api.Errorf(api.CodeVerificationFailed, "passkey: the ceremony is over")
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

// use marks the ceremony checked; false when it already was.
func (c *ceremony) use() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used {
		return false
	}
	c.used = true
	return true
}

// report hands Complete's verdict to a page waiting for it.
func (c *ceremony) report(err error) {
	select {
	case c.outcome <- err:
	default:
	}
}

// server is the loopback page server shared by a Method's ceremonies.
type server struct {
	m *Method

	mu         sync.Mutex
	hs         *http.Server
	lns        []net.Listener
	port       int
	ceremonies map[string]*ceremony
	idle       *time.Timer
	launch     launchDir
}

// launcherPath returns c's launcher file, writing it on first use.
func (c *ceremony) launcherPath() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.launcher != "" {
		return c.launcher, nil
	}
	if c.served {
		return "", errors.New("the page was already loaded")
	}
	p, err := c.srv.launch.write(c.url)
	if err != nil {
		return "", err
	}
	c.launcher = p
	return p, nil
}

// dropLauncherLocked removes c's launcher file. Callers hold c.mu.
func (c *ceremony) dropLauncherLocked() {
	if c.launcher != "" {
		_ = os.Remove(c.launcher)
	}
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newCeremony registers a ceremony, starting the server if needed.
func (s *server) newCeremony(k kind) (*ceremony, error) {
	tok, err := randomToken()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs == nil {
		if err := s.startLocked(); err != nil {
			return nil, fmt.Errorf("passkey: cannot serve the browser page: %w", err)
		}
	}
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	origin := "http://localhost:" + strconv.Itoa(s.port)
	c := &ceremony{
		kind: k, token: tok, origin: origin, url: origin + "/c/" + tok, srv: s,
		ended: make(chan struct{}), postedCh: make(chan struct{}), outcome: make(chan error, 1),
	}
	c.timer = time.AfterFunc(s.m.ceremonyTimeout, func() {
		c.mu.Lock()
		c.expired = true
		c.mu.Unlock()
		s.end(c)
	})
	if s.ceremonies == nil {
		s.ceremonies = map[string]*ceremony{}
	}
	s.ceremonies[tok] = c
	return c, nil
}

// end forgets a ceremony; the server stops when none is left for the
// idle timeout.
func (s *server) end(c *ceremony) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ceremonies[c.token] != c {
		return
	}
	delete(s.ceremonies, c.token)
	c.timer.Stop()
	close(c.ended)
	c.mu.Lock()
	c.dropLauncherLocked()
	c.mu.Unlock()
	if len(s.ceremonies) == 0 && s.hs != nil {
		if s.idle != nil {
			s.idle.Stop()
		}
		s.idle = time.AfterFunc(s.m.idleTimeout, s.stopIfIdle)
	}
}

func (s *server) stopIfIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ceremonies) == 0 {
		s.stopLocked()
	}
}

func (s *server) stopLocked() {
	if s.hs == nil {
		return
	}
	_ = s.hs.Close()
	s.hs, s.lns, s.port = nil, nil, 0
	// No ceremony is left: neither is a launcher.
	s.launch.close()
	s.m.log.Debug("passkey page server stopped")
}

func (s *server) close() error {
	s.mu.Lock()
	cs := make([]*ceremony, 0, len(s.ceremonies))
	for _, c := range s.ceremonies {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		s.end(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != nil {
		s.idle.Stop()
	}
	s.stopLocked()
	s.launch.close()
	return nil
}

// Port returns the page server's port, 0 when it is not running (tests).
func (m *Method) Port() int {
	m.srv.mu.Lock()
	defer m.srv.mu.Unlock()
	return m.srv.port
}

// startLocked listens on 127.0.0.1:0 and, when the host has IPv6, on
// [::1] at the same port: browsers may resolve localhost to ::1 first, and
// another local process must not be able to answer there.
func (s *server) startLocked() error {
	var lns []net.Listener
	var lastErr error
	for attempt := 0; attempt < 8 && lns == nil; attempt++ {
		l4, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := l4.Addr().(*net.TCPAddr).Port
		l6, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
		switch {
		case err == nil:
			lns = []net.Listener{l4, l6}
		case errors.Is(err, syscall.EADDRINUSE):
			// Someone holds [::1]:port: try another port.
			_ = l4.Close()
			lastErr = err
		default:
			// No IPv6 loopback here; nothing can listen there either.
			lns = []net.Listener{l4}
		}
	}
	if lns == nil {
		return lastErr
	}
	s.port = lns[0].Addr().(*net.TCPAddr).Port
	s.lns = lns
	el, _ := zap.NewStdLogAt(s.m.log.With(zap.String("component", "passkey-page")), zap.DebugLevel)
	s.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          el,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			uid, err := peerUID(conn.LocalAddr(), conn.RemoteAddr())
			return context.WithValue(ctx, peerKey{}, peer{uid: uid, err: err})
		},
	}
	for _, l := range lns {
		go func(hs *http.Server, l net.Listener) { _ = hs.Serve(l) }(s.hs, l)
	}
	s.m.log.Debug("passkey page server started", zap.Int("port", s.port))
	return nil
}

const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func secureHeaders(h http.Header) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// peer is who is at the other end of a connection to the page server.
type peer struct {
	uid int
	err error
}

type peerKey struct{}

// cookieName is the cookie that binds a ceremony to the browser that
// loaded its page.
const cookieName = "stepup_page"

// fromUs reports whether the request comes from a program of the agent's
// own user. Where the peer cannot be looked up (not Linux) every request
// passes here and the page's secret address and cookie are the guard.
func (s *server) fromUs(r *http.Request) bool {
	if !peerCheckAvailable {
		return true
	}
	p, ok := r.Context().Value(peerKey{}).(peer)
	if !ok || p.err != nil {
		if ok {
			s.m.log.Warn("passkey page: cannot tell who connected; refused", zap.Error(p.err))
		}
		return false
	}
	if p.uid != os.Geteuid() {
		s.m.log.Warn("passkey page: refused a request from another user", zap.Int("uid", p.uid))
		return false
	}
	return true
}

func (s *server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w.Header())
	// Another user of this computer may connect to loopback too: only
	// the agent's own user's programs (the user's browser) are answered.
	if !s.fromUs(r) {
		http.Error(w, "this page belongs to another user of this computer", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	// Only localhost:PORT: a page opened through 127.0.0.1 could not use
	// the RP ID "localhost", and any other name is DNS rebinding.
	if r.Host != "localhost:"+strconv.Itoa(port) {
		http.Error(w, "open this page at http://localhost:"+strconv.Itoa(port)+"/", http.StatusMisdirectedRequest)
		return
	}
	switch {
	case r.URL.Path == "/app.js" || r.URL.Path == "/app.css":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := static.ReadFile("static" + r.URL.Path)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		ct := "text/javascript; charset=utf-8"
		if strings.HasSuffix(r.URL.Path, ".css") {
			ct = "text/css; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(b)
	case strings.HasPrefix(r.URL.Path, "/c/"):
		s.mu.Lock()
		c := s.ceremonies[strings.TrimPrefix(r.URL.Path, "/c/")]
		s.mu.Unlock()
		if c == nil {
			http.Error(w, "this page has expired or was already used", http.StatusGone)
			return
		}
		switch r.Method {
		case http.MethodGet:
			s.page(w, r, c)
		case http.MethodPost:
			s.post(w, r, c)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	default:
		http.NotFound(w, r)
	}
}

type pageData struct {
	Mode    string
	Options string
	Title   string
}

// page serves a ceremony's page, once, and binds the ceremony to the
// browser that loaded it with a cookie its POST must carry.
func (s *server) page(w http.ResponseWriter, r *http.Request, c *ceremony) {
	bind, err := randomToken()
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	c.mu.Lock()
	if !c.ready || c.served {
		c.mu.Unlock()
		http.Error(w, "this page has expired or was already used", http.StatusGone)
		return
	}
	c.served = true
	c.bind = bind
	c.dropLauncherLocked()
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: bind, Path: r.URL.Path,
		MaxAge: int(s.m.ceremonyTimeout / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	d := pageData{Mode: c.kind.String(), Options: string(c.opts), Title: "Confirm with your passkey"}
	if c.kind == kindCreate {
		d.Title = "Create a passkey for stepup-agent"
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	page, err := static.ReadFile("static/page.html")
	if err == nil {
		_, err = io.WriteString(w, fill(string(page), "Mode", d.Mode, "Options", d.Options, "Title", d.Title))
	}
	if err != nil {
		s.m.log.Debug("writing the passkey page", zap.Error(err))
	}
}

type postResult struct {
	OK      bool   `json:"ok"`
	Pending bool   `json:"pending,omitempty"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// post takes the page's WebAuthn result, once, and answers with the
// verdict when Complete gives one in time.
func (s *server) post(w http.ResponseWriter, r *http.Request, c *ceremony) {
	// Only the browser that loaded the page may answer: anything else is
	// refused here, before it can end the ceremony or count as a failure.
	c.mu.Lock()
	bind, served := c.bind, c.served
	c.mu.Unlock()
	ck, err := r.Cookie(cookieName)
	if !served || err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(bind)) != 1 {
		http.Error(w, "this page was loaded by another browser: answer there", http.StatusForbidden)
		return
	}
	if r.Header.Get("Origin") != c.origin {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		http.Error(w, "expected application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if !json.Valid(body) {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	if !c.served || c.posted != nil || c.used {
		c.mu.Unlock()
		writeJSON(w, http.StatusConflict, postResult{Message: "This ceremony was already answered."})
		return
	}
	c.posted = body
	close(c.postedCh)
	c.mu.Unlock()

	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case err := <-c.outcome:
		if err != nil {
			writeJSON(w, http.StatusOK, postResult{Message: "The passkey was not accepted."})
			return
		}
		msg := "Done. You can close this page and return to your application."
		writeJSON(w, http.StatusOK, postResult{OK: true, Message: msg})
	case <-t.C:
		writeJSON(w, http.StatusOK, postResult{OK: true, Pending: true, Message: "Received. Return to your application."})
	case <-c.ended:
		select {
		case err := <-c.outcome:
			writeJSON(w, http.StatusOK, postResult{OK: err == nil, Message: map[bool]string{true: "Done. You can close this page.", false: "The passkey was not accepted."}[err == nil]})
		default:
			writeJSON(w, http.StatusOK, postResult{Message: "This ceremony has ended."})
		}
	case <-r.Context().Done():
	}
}
