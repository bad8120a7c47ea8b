package m2mauth

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

type publicKey struct {
	key crypto.PublicKey
	alg string
}

// keyCache holds the JWKS by kid. It refetches when the server's Cache-Control max-age runs out
// (in the background) and when a token names an unknown kid (at most once per minRefresh, with
// concurrent misses collapsed into one fetch).
type keyCache struct {
	url        string
	httpClient *http.Client
	minRefresh time.Duration
	now        func() time.Time

	mu        sync.RWMutex
	keys      map[string]publicKey
	etag      string
	fetchedAt time.Time
	maxAge    time.Duration

	group singleflight.Group
}

const (
	defaultMaxAge = 5 * time.Minute
	maxMaxAge     = 24 * time.Hour
)

func (c *keyCache) lookup(kid string) (publicKey, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.keys[kid]
	return k, ok
}

// get returns the key for kid, fetching the JWKS again when the kid is unknown and the last
// fetch is older than minRefresh.
func (c *keyCache) get(ctx context.Context, kid string) (publicKey, error) {
	if k, ok := c.lookup(kid); ok {
		return k, nil
	}
	c.mu.RLock()
	recent := c.now().Sub(c.fetchedAt) < c.minRefresh
	c.mu.RUnlock()
	if !recent {
		if err := c.refresh(ctx); err != nil {
			return publicKey{}, err
		}
		if k, ok := c.lookup(kid); ok {
			return k, nil
		}
	}
	return publicKey{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
}

// refresh fetches the JWKS; concurrent callers share one request.
func (c *keyCache) refresh(ctx context.Context) error {
	_, err, _ := c.group.Do("jwks", func() (any, error) {
		return nil, c.fetch(ctx)
	})
	return err
}

func (c *keyCache) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, c.url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrJWKS, err)
	}
	c.mu.RLock()
	if c.etag != "" {
		req.Header.Set("If-None-Match", c.etag)
	}
	c.mu.RUnlock()
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrJWKS, err)
	}
	defer resp.Body.Close()
	now := c.now()
	maxAge := parseMaxAge(resp.Header.Get("Cache-Control"))
	if resp.StatusCode == http.StatusNotModified {
		c.mu.Lock()
		c.fetchedAt, c.maxAge = now, maxAge
		c.mu.Unlock()
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s answered %d", ErrJWKS, c.url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrJWKS, err)
	}
	var set jwk.Set
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("%w: %s is not a JWK Set: %v", ErrJWKS, c.url, err)
	}
	keys := map[string]publicKey{}
	for _, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		pub, err := j.PublicKey()
		if err != nil || j.KeyID == "" || !acceptedAlgs[j.Algorithm] {
			continue // a key this library cannot use never verifies anything
		}
		keys[j.KeyID] = publicKey{key: pub, alg: j.Algorithm}
	}
	c.mu.Lock()
	c.keys, c.etag, c.fetchedAt, c.maxAge = keys, resp.Header.Get("ETag"), now, maxAge
	c.mu.Unlock()
	return nil
}

// run refreshes the JWKS in the background when its max-age runs out, until ctx ends.
func (c *keyCache) run(ctx context.Context) {
	for {
		c.mu.RLock()
		wait := c.maxAge - c.now().Sub(c.fetchedAt)
		c.mu.RUnlock()
		if wait < c.minRefresh {
			wait = c.minRefresh
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
			_ = c.refresh(ctx) // keep the keys we have when the server is away
		}
	}
}

// parseMaxAge reads max-age from Cache-Control, within sane bounds.
func parseMaxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			if s, err := strconv.Atoi(v); err == nil && s >= 0 {
				return min(time.Duration(s)*time.Second, maxMaxAge)
			}
		}
	}
	return defaultMaxAge
}
