package stephttp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	// keysMaxAge is how long a fetched JWK Set is used before it is
	// fetched again.
	keysMaxAge = time.Hour
	// refreshMin is the least time between two fetches prompted by an
	// unknown kid, so that tokens with made-up kids cannot make the
	// verifier hammer the agent or the JWKS URL.
	refreshMin = 10 * time.Second
	// maxJWKS bounds a fetched JWK Set.
	maxJWKS = 1 << 20
)

type fetchFunc func(ctx context.Context) ([]byte, error)

// keyCache holds the agent's JWK Set, fetched on first use, after
// keysMaxAge, and when a token names a kid it does not hold (the agent's
// key changed), at most once per refreshMin.
type keyCache struct {
	fetch fetchFunc
	now   func() time.Time

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
}

func newKeyCache(f fetchFunc) *keyCache { return &keyCache{fetch: f, now: time.Now} }

func (k *keyCache) get(ctx context.Context, kid string) (*jose.JSONWebKeySet, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	stale := k.keys == nil || now.Sub(k.fetched) > keysMaxAge
	unknown := k.keys != nil && len(k.keys.Key(kid)) == 0 && now.Sub(k.fetched) > refreshMin
	if !stale && !unknown {
		return k.keys, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := k.fetch(ctx)
	if err == nil {
		var set jose.JSONWebKeySet
		if err = json.Unmarshal(raw, &set); err == nil {
			k.keys, k.fetched = &set, now
			return k.keys, nil
		}
		err = fmt.Errorf("the JWK Set does not parse: %w", err)
	}
	if k.keys != nil {
		// Keep verifying with the keys we have.
		return k.keys, nil
	}
	return nil, err
}

// urlFetcher fetches a JWK Set from u: https, or http to a loopback
// address only (a man in the middle could otherwise swap the keys).
func urlFetcher(u string, hc *http.Client) (fetchFunc, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("stephttp: JWKSURL: %w", err)
	}
	switch pu.Scheme {
	case "https":
	case "http":
		ip := net.ParseIP(pu.Hostname())
		if !(pu.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
			return nil, fmt.Errorf("stephttp: JWKSURL %s: use https (plain http only to a loopback address)", u)
		}
	default:
		return nil, fmt.Errorf("stephttp: JWKSURL %s: use https", u)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/jwk-set+json, application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
		if err != nil {
			return nil, err
		}
		if len(b) > maxJWKS {
			return nil, errors.New("the JWK Set is larger than 1 MiB")
		}
		return b, nil
	}, nil
}

// kidOf returns the kid of a JWS compact token's header, or "".
func kidOf(tok string) string {
	h, _, ok := strings.Cut(tok, ".")
	if !ok || len(h) > 1024 {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return ""
	}
	var hdr struct {
		KID string `json:"kid"`
	}
	json.Unmarshal(raw, &hdr)
	return hdr.KID
}
