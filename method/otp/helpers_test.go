package otp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// observed returns a logger that records every entry, to check that no
// code reaches a log line.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// assertNotLogged fails when any entry's message or fields contain s.
func assertNotLogged(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		line := buf.String()
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Fatalf("log line carries a secret: %s", line)
			}
		}
	}
}

// received is one message the test SMTP server accepted.
type received struct {
	From string
	To   []string
	Data []byte
	TLS  bool
	Auth string // the username that authenticated
}

// smtpServer is a real SMTP server (github.com/emersion/go-smtp, an
// independent implementation) on loopback.
type smtpServer struct {
	Host  string
	Port  int
	Inbox chan received
	srv   *smtp.Server
}

type smtpBackend struct {
	inbox chan received
	users map[string]string
}

func (b *smtpBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &smtpSession{b: b, c: c}, nil
}

type smtpSession struct {
	b    *smtpBackend
	c    *smtp.Conn
	msg  received
	user string
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if want, ok := s.b.users[username]; !ok || want != password {
			return errors.New("invalid credentials")
		}
		s.user = username
		return nil
	}), nil
}

func (s *smtpSession) Reset()        { s.msg = received{} }
func (s *smtpSession) Logout() error { return nil }

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if len(s.b.users) > 0 && s.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	s.msg.From = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.Data = b
	_, s.msg.TLS = s.c.TLSConnectionState()
	s.msg.Auth = s.user
	s.b.inbox <- s.msg
	return nil
}

type smtpMode int

const (
	plainSMTP smtpMode = iota
	startTLSSMTP
	implicitTLSSMTP
)

// startSMTP runs an SMTP server on 127.0.0.1 until the test ends. users,
// when not empty, makes AUTH PLAIN mandatory.
func startSMTP(t *testing.T, mode smtpMode, cert *tls.Certificate, users map[string]string) *smtpServer {
	t.Helper()
	be := &smtpBackend{inbox: make(chan received, 10), users: users}
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 1 << 20
	var l net.Listener
	var err error
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case plainSMTP:
		srv.AllowInsecureAuth = true
	case startTLSSMTP:
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	case implicitTLSSMTP:
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		l = tls.NewListener(l, srv.TLSConfig)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := l.Addr().(*net.TCPAddr)
	return &smtpServer{Host: "127.0.0.1", Port: addr.Port, Inbox: be.inbox, srv: srv}
}

// selfSigned makes a certificate for 127.0.0.1 and localhost and a pool
// that trusts it.
func selfSigned(t *testing.T) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "stepup test SMTP"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, pool
}

var codeRE = regexp.MustCompile(`\b([0-9]{6})\b`)

// codeFromMail parses a message the way a mail reader does (headers,
// transfer encoding) and returns the code in its text.
func codeFromMail(t *testing.T, data []byte) (code string, msg *mail.Message, text string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("unparsable message: %v", err)
	}
	var body io.Reader = msg.Body
	switch strings.ToLower(msg.Header.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		t.Fatal("unexpected base64 body")
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _, err := mime.ParseMediaType(msg.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		t.Fatalf("content type %q", msg.Header.Get("Content-Type"))
	}
	m := codeRE.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no code in the message body %q", b)
	}
	return m[1], msg, string(b)
}

func waitMail(t *testing.T, s *smtpServer) received {
	t.Helper()
	select {
	case m := <-s.Inbox:
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no message arrived")
	}
	panic("unreachable")
}

func noMail(t *testing.T, s *smtpServer) {
	t.Helper()
	select {
	case m := <-s.Inbox:
		t.Fatalf("unexpected message to %v", m.To)
	case <-time.After(300 * time.Millisecond):
	}
}

func codeResp(code string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"code": code})
	return b
}

// wrong returns a 6-digit code different from code.
func wrong(code string) string {
	b := []byte(code)
	b[0] = '0' + (b[0]-'0'+1)%10
	return string(b)
}
