package otp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
)

// SMTP TLS modes of policy.SMTP.TLS.
const (
	TLSStartTLS = "starttls"
	TLSImplicit = "tls"
	TLSNone     = "none"
)

// NewEmail returns the email_otp method. Mail goes out through the SMTP
// server of the policy's delivery.smtp (read at every delivery, so a
// reloaded policy applies at once); cfg.Secret returns the SMTP password
// from the keychain when delivery.smtp.username is set.
//
// Mail goes out through the standard library's net/smtp (smtp.go: the
// dial under the request's context, STARTTLS required unless tls is
// implicit or none, the MIME message built here). github.com/wneessen/go-mail
// did this before; it linked text/template (and html/template), whose
// reflective method calls keep every exported method of every type in
// the daemon's binary: 3.6 MB of it and about 2 MiB of resident memory
// at rest (docs/BENCHMARKS.md, "Notes").
func NewEmail(cfg Config) *Method {
	s := &smtpSender{deps: cfg.Deps, password: cfg.Secret, rootCAs: cfg.RootCAs}
	return newMethod(api.EmailOTP, []string{"mail", "otp"}, cfg, s)
}

type smtpSender struct {
	deps     method.Deps
	password SecretFunc
	rootCAs  *x509.CertPool
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (s *smtpSender) config() (*policy.SMTP, error) {
	var cfg *policy.SMTP
	if s.deps.Policy != nil {
		if p := s.deps.Policy(); p != nil {
			cfg = p.Delivery.SMTP
		}
	}
	if cfg == nil || cfg.Host == "" || cfg.From == "" {
		return nil, api.Errorf(api.CodeNotEnrolled, "email_otp: no mail server configured").
			WithHint("set delivery.smtp {host, port, tls, from, username} in the policy (docs/methods.md)")
	}
	return cfg, nil
}

func (s *smtpSender) send(ctx context.Context, dest, text string) error {
	cfg, err := s.config()
	if err != nil {
		return err
	}
	mode := strings.ToLower(cfg.TLS)
	if mode == "" {
		mode = TLSStartTLS
	}
	port := cfg.Port
	switch mode {
	case TLSStartTLS:
		if port == 0 {
			port = 587
		}
	case TLSImplicit:
		if port == 0 {
			port = 465
		}
	case TLSNone:
		// A code in clear text may only travel on this machine (a local
		// relay such as postfix or an SSH tunnel).
		if !isLoopbackHost(cfg.Host) {
			return api.Errorf(api.CodeInternal, "email_otp: delivery.smtp.tls none is allowed only for a loopback host").
				WithHint("use tls: starttls or tls")
		}
		if port == 0 {
			port = 25
		}
	default:
		return api.Errorf(api.CodeInternal, "email_otp: delivery.smtp.tls must be starttls, tls or none")
	}
	var pw string
	if cfg.Username != "" {
		if s.password == nil {
			return errors.New("email_otp: no keychain access for the SMTP password")
		}
		pw, err = s.password(ctx)
		if err != nil {
			return fmt.Errorf("email_otp: reading the SMTP password from the keychain: %w", err)
		}
		if pw == "" {
			return api.Errorf(api.CodeInternal, "email_otp: delivery.smtp.username is set but the keychain holds no SMTP password").
				WithHint("store the SMTP password in the keychain (docs/methods.md, \"email_otp\")")
		}
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return fmt.Errorf("email_otp: delivery.smtp.from: %w", err)
	}
	to, err := mail.ParseAddress(dest)
	if err != nil {
		return fmt.Errorf("email_otp: bad address: %w", err)
	}
	msg, err := message(from, to, "Your verification code", text+"\r\n", time.Now())
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{ServerName: cfg.Host, RootCAs: s.rootCAs, MinVersion: tls.VersionTLS12}
	err = deliver(ctx, net.JoinHostPort(cfg.Host, strconv.Itoa(port)), cfg.Host, mode, tlsConf, cfg.Username, pw, from.Address, to.Address, msg)
	return scrub(err, pw)
}
