package otp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
)

// SMS webhook formats of policy.SMS.Format.
const (
	FormatJSON   = "json"
	FormatTwilio = "twilio"
)

// NewSMS returns the sms_otp method. Codes go out as an HTTP POST to the
// policy's delivery.sms.webhook (read at every delivery):
//
//   - format json (the default): a JSON body {to, body} (and from, when
//     delivery.sms.from is set), with "Authorization: Bearer TOKEN" when
//     cfg.Secret returns one;
//   - format twilio: a Twilio-compatible form (To, From, Body) with HTTP
//     basic auth: the secret is "ACCOUNT_SID:AUTH_TOKEN", or just the auth
//     token when the webhook's path names the account (/Accounts/SID/).
//
// The webhook must be https, or http to a loopback address (a local
// relay). Redirects are not followed.
func NewSMS(cfg Config) *Method {
	c := cfg.HTTPClient
	if c == nil {
		c = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout: SendTimeout / 3,
				MaxIdleConns:        2,
				IdleConnTimeout:     SendTimeout,
			},
		}
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s := &smsSender{deps: cfg.Deps, token: cfg.Secret, client: &cc}
	return newMethod(api.SMSOTP, []string{"sms", "otp"}, cfg, s)
}

type smsSender struct {
	deps   method.Deps
	token  SecretFunc
	client *http.Client
}

var twilioAccountRE = regexp.MustCompile(`/Accounts/([A-Za-z0-9]+)/`)

func (s *smsSender) config() (*policy.SMS, *url.URL, error) {
	var cfg *policy.SMS
	if s.deps.Policy != nil {
		if p := s.deps.Policy(); p != nil {
			cfg = p.Delivery.SMS
		}
	}
	if cfg == nil || cfg.Webhook == "" {
		return nil, nil, api.Errorf(api.CodeNotEnrolled, "sms_otp: no SMS webhook configured").
			WithHint("set delivery.sms {webhook, format, from} in the policy (docs/methods.md)")
	}
	u, err := url.Parse(cfg.Webhook)
	if err != nil || u.Host == "" {
		return nil, nil, api.Errorf(api.CodeInternal, "sms_otp: delivery.sms.webhook is not a URL")
	}
	if u.User != nil {
		return nil, nil, api.Errorf(api.CodeInternal, "sms_otp: delivery.sms.webhook must not carry credentials").
			WithHint("keep the webhook's token in the keychain (docs/methods.md)")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
	default:
		return nil, nil, api.Errorf(api.CodeInternal, "sms_otp: delivery.sms.webhook must be https (http only to a loopback address)")
	}
	return cfg, u, nil
}

func (s *smsSender) send(ctx context.Context, dest, text string) error {
	cfg, u, err := s.config()
	if err != nil {
		return err
	}
	var tok string
	if s.token != nil {
		if tok, err = s.token(ctx); err != nil {
			return fmt.Errorf("sms_otp: reading the webhook token from the keychain: %w", err)
		}
	}
	var body []byte
	var ctype string
	format := strings.ToLower(cfg.Format)
	switch format {
	case "", FormatJSON:
		m := map[string]string{"to": dest, "body": text}
		if cfg.From != "" {
			m["from"] = cfg.From
		}
		if body, err = json.Marshal(m); err != nil {
			return err
		}
		ctype = "application/json"
	case FormatTwilio:
		if cfg.From == "" {
			return api.Errorf(api.CodeInternal, "sms_otp: format twilio needs delivery.sms.from")
		}
		f := url.Values{"To": {dest}, "From": {cfg.From}, "Body": {text}}
		body = []byte(f.Encode())
		ctype = "application/x-www-form-urlencoded"
	default:
		return api.Errorf(api.CodeInternal, "sms_otp: delivery.sms.format must be json or twilio")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "stepup-agent")
	if tok != "" {
		if format == FormatTwilio {
			user, pass, ok := strings.Cut(tok, ":")
			if !ok {
				pass = tok
				m := twilioAccountRE.FindStringSubmatch(u.Path)
				if m == nil {
					return errors.New("sms_otp: the twilio token must be ACCOUNT_SID:AUTH_TOKEN when the webhook does not name the account")
				}
				user = m[1]
			}
			req.SetBasicAuth(user, pass)
		} else {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// url.Error quotes the URL (safe: no credentials allowed in
			// it) and the cause; keep only the cause's kind.
			var ne net.Error
			if errors.As(ue.Err, &ne) && ne.Timeout() {
				return fmt.Errorf("sms_otp: webhook %s timed out", u.Redacted())
			}
			return scrub(fmt.Errorf("sms_otp: webhook %s: %w", u.Redacted(), ue.Err), tok)
		}
		return scrub(err, tok)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	// net/http reads any HTTP/d.d status line; a reply in a version that
	// does not exist (HTTP/0.1 200, HTTP/2.1 200) or a text status line
	// claiming HTTP/2 (which the transport speaks only framed, over TLS
	// that negotiated h2) is a broken server, not a delivery.
	h1 := resp.ProtoMajor == 1 && resp.ProtoMinor <= 1
	h2 := resp.ProtoMajor == 2 && resp.ProtoMinor == 0 && resp.TLS != nil && resp.TLS.NegotiatedProtocol == "h2"
	if !h1 && !h2 {
		return fmt.Errorf("sms_otp: webhook %s answered in %s, not HTTP/1.0, 1.1 or 2", u.Redacted(), resp.Proto)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The reason phrase is the server's text: one that echoes the
		// token it was sent must not carry it into an error or a log.
		return scrub(fmt.Errorf("sms_otp: webhook %s answered %s", u.Redacted(), resp.Status), tok)
	}
	return nil
}
