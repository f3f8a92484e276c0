package externaljwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// keyCache holds the JWK Sets by source (a path or a URL).
type keyCache struct {
	opt  Config
	log  *zap.Logger
	http *http.Client

	mu      sync.Mutex
	sources map[string]*source
}

type source struct {
	mu      sync.Mutex
	set     *jose.JSONWebKeySet
	fetched time.Time // URL: when set was fetched; zero: never
	tried   time.Time // URL: when a fetch was last tried
	modTime time.Time // file
	size    int64     // file
}

func newKeyCache(o Config, log *zap.Logger) *keyCache {
	c := &keyCache{opt: o, log: log, sources: map[string]*source{}}
	c.http = &http.Client{
		Timeout: o.HTTPTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return checkURL(req.URL)
		},
	}
	return c
}

func (c *keyCache) source(name string) *source {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sources[name]
	if s == nil {
		s = &source{}
		c.sources[name] = s
	}
	return s
}

// isURL reports whether the policy's jwks names a URL rather than a file.
func isURL(s string) bool {
	return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://")
}

// checkURL allows https anywhere and http only to a loopback host.
func checkURL(u *url.URL) error {
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if host == "localhost" {
			return nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("the JWK Set URL must be https (http is allowed only to a loopback address)")
	}
	return fmt.Errorf("the JWK Set URL must be https")
}

// find returns the key that checks a signature with kid and alg.
func (c *keyCache) find(ctx context.Context, name, kid string, alg jose.SignatureAlgorithm) (jose.JSONWebKey, error) {
	s := c.source(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if isURL(name) {
		return c.findURL(ctx, s, name, kid, alg)
	}
	if err := c.loadFile(s, name); err != nil {
		return jose.JSONWebKey{}, err
	}
	return pick(s.set, kid, alg)
}

func (c *keyCache) findURL(ctx context.Context, s *source, name, kid string, alg jose.SignatureAlgorithm) (jose.JSONWebKey, error) {
	now := c.opt.Now()
	if s.set == nil || now.Sub(s.fetched) >= c.opt.TTL {
		if err := c.fetch(ctx, s, name, now); err != nil && s.set == nil {
			return jose.JSONWebKey{}, err
		}
	}
	k, err := pick(s.set, kid, alg)
	var ue *unknownKeyError
	if errors.As(err, &ue) && now.Sub(s.tried) >= c.opt.MinRefetch {
		// An unknown kid: the backend may have rotated its keys.
		c.log.Info("unknown kid; fetching the JWK Set again", zap.String("jwks", name))
		if ferr := c.fetch(ctx, s, name, now); ferr != nil {
			return jose.JSONWebKey{}, err
		}
		return pick(s.set, kid, alg)
	}
	return k, err
}

func (c *keyCache) fetch(ctx context.Context, s *source, name string, now time.Time) error {
	s.tried = now
	u, err := url.Parse(name)
	if err != nil {
		return fmt.Errorf("externalJwt.jwks is not a valid URL")
	}
	if err := checkURL(u); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, name, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		c.log.Warn("cannot fetch the JWK Set", zap.String("jwks", name), zap.Error(err))
		return fmt.Errorf("cannot fetch the JWK Set %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.log.Warn("cannot fetch the JWK Set", zap.String("jwks", name), zap.Int("status", resp.StatusCode))
		return fmt.Errorf("cannot fetch the JWK Set %s: HTTP %d", name, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("cannot fetch the JWK Set %s: %w", name, err)
	}
	set, err := parseSet(b)
	if err != nil {
		c.log.Warn("bad JWK Set", zap.String("jwks", name), zap.Error(err))
		return fmt.Errorf("the JWK Set %s: %w", name, err)
	}
	s.set, s.fetched = set, now
	c.log.Info("JWK Set fetched", zap.String("jwks", name), zap.Int("keys", len(set.Keys)))
	return nil
}

// loadFile (re)reads the file when its modification time or size changed.
func (c *keyCache) loadFile(s *source, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read the JWK Set file %s: %w", path, err)
	}
	if s.set != nil && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read the JWK Set file %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("cannot read the JWK Set file %s: %w", path, err)
	}
	set, err := parseSet(b)
	if err != nil {
		if s.set != nil {
			c.log.Warn("bad JWK Set file; keeping the last good one", zap.String("jwks", path), zap.Error(err))
			return nil
		}
		return fmt.Errorf("the JWK Set file %s: %w", path, err)
	}
	s.set, s.modTime, s.size = set, fi.ModTime(), fi.Size()
	c.log.Info("JWK Set loaded", zap.String("jwks", path), zap.Int("keys", len(set.Keys)))
	return nil
}

func parseSet(b []byte) (*jose.JSONWebKeySet, error) {
	if len(b) > maxJWKSBytes {
		return nil, errors.New("larger than 1 MiB")
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("no keys")
	}
	return &set, nil
}

type unknownKeyError struct{ RefusedError }

// pick chooses the key for kid and alg. Without a kid, the set must hold
// exactly one key for alg.
func pick(set *jose.JSONWebKeySet, kid string, alg jose.SignatureAlgorithm) (jose.JSONWebKey, error) {
	var cands []jose.JSONWebKey
	if kid != "" {
		for _, k := range set.Key(kid) {
			if usable(k, alg) {
				cands = append(cands, k.Public())
			}
		}
	} else {
		for _, k := range set.Keys {
			if usable(k, alg) {
				cands = append(cands, k.Public())
			}
		}
	}
	switch {
	case len(cands) == 1:
		return cands[0], nil
	case len(cands) == 0 && kid != "":
		return jose.JSONWebKey{}, &unknownKeyError{RefusedError{Reason: fmt.Sprintf("no %s key with kid %q in the JWK Set", alg, short(kid))}}
	case len(cands) == 0:
		return jose.JSONWebKey{}, &unknownKeyError{RefusedError{Reason: fmt.Sprintf("no %s key in the JWK Set", alg)}}
	default:
		return jose.JSONWebKey{}, refused("the assertion has no kid and the JWK Set has several %s keys", alg)
	}
}

// short cuts a header value for an error message.
func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
