package otp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"os"
	"strings"
	"time"
)

// maxDelivery bounds one delivery when the request sets no earlier
// deadline (docs/methods.md, "email_otp").
const maxDelivery = 30 * time.Second

// deliver sends msg from one address to one over SMTP at addr: implicit
// TLS (mode tls), STARTTLS that must be offered (starttls), or clear text
// (none; the caller allows it for a loopback host only). With a user it
// authenticates with the first of PLAIN, LOGIN and CRAM-MD5 the server
// offers, only ever once the connection is encrypted or to a loopback
// host. The whole exchange ends at ctx's deadline (at most maxDelivery)
// or when ctx is cancelled.
func deliver(ctx context.Context, addr, host, mode string, conf *tls.Config, user, pw, from, to string, msg []byte) error {
	deadline := time.Now().Add(maxDelivery)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	// A cancelled request or a passed deadline ends a stuck exchange.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(deadline)
	if mode == TLSImplicit {
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return err
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello(helloName()); err != nil {
		return err
	}
	if mode == TLSStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("the SMTP server does not offer STARTTLS (delivery.smtp.tls starttls requires it)")
		}
		if err := c.StartTLS(conf); err != nil {
			return err
		}
	}
	if user != "" {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return errors.New("the SMTP server offers no authentication, but delivery.smtp.username is set")
		}
		a, err := pickAuth(mechs, user, pw, host)
		if err != nil {
			return err
		}
		if err := c.Auth(a); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// helloName is the name the agent gives in EHLO: the host's name when it
// is a valid domain name, else "localhost".
func helloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsFunc(h, func(r rune) bool {
		return !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return "localhost"
	}
	return h
}

// pickAuth chooses among the mechanisms the server lists (the AUTH
// extension's parameter).
func pickAuth(mechs, user, pw, host string) (smtp.Auth, error) {
	offered := strings.Fields(strings.ToUpper(mechs))
	for _, m := range []string{"PLAIN", "LOGIN", "CRAM-MD5"} {
		for _, o := range offered {
			if o != m {
				continue
			}
			switch m {
			case "PLAIN":
				return smtp.PlainAuth("", user, pw, host), nil
			case "LOGIN":
				return &loginAuth{user: user, pw: pw, host: host}, nil
			default:
				return smtp.CRAMMD5Auth(user, pw), nil
			}
		}
	}
	return nil, fmt.Errorf("the SMTP server offers no authentication the agent speaks (offered: %s; the agent speaks PLAIN, LOGIN, CRAM-MD5)", mechs)
}

// loginAuth is the LOGIN mechanism (draft-murchison-sasl-login): the
// user name, then the password, each answering the server's prompt.
// Like net/smtp's PlainAuth it refuses to send them in clear text to
// another host than this one.
type loginAuth struct {
	user, pw, host string
	step           int
}

func (a *loginAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS && !isLoopbackHost(server.Name) {
		return "", nil, errors.New("unencrypted connection")
	}
	if server.Name != a.host {
		return "", nil, errors.New("wrong host name")
	}
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(_ []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	switch a.step {
	case 1:
		return []byte(a.user), nil
	case 2:
		return []byte(a.pw), nil
	}
	return nil, errors.New("unexpected server challenge")
}

// message is a text/plain UTF-8 mail, quoted-printable, with the headers
// a mail reader expects (Date, Message-ID, MIME-Version).
func message(from, to *mail.Address, subject, body string, now time.Time) ([]byte, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	domain := "localhost"
	if at := strings.LastIndexByte(from.Address, '@'); at >= 0 && at+1 < len(from.Address) {
		domain = from.Address[at+1:]
	}
	var b strings.Builder
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", from.String())
	hdr("To", to.String())
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+hex.EncodeToString(id[:])+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=UTF-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(body)); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}
