package m2mauth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
// (in the background) and when a token names an unknown kid, with concurrent misses collapsed
// into one fetch. Attempts, successful or not, are at least minRefresh apart, and the gap doubles
// with each failure up to maxBackoff, so that neither made-up kids nor a failing token server
// turn into a stream of fetches.
type keyCache struct {
	url        string
	httpClient *http.Client
	minRefresh time.Duration
	// fetchTimeout bounds one fetch. A fetch is shared by every caller waiting for it, so it
	// runs on its own deadline, not on any one caller's.
	fetchTimeout time.Duration
	now          func() time.Time

	mu          sync.RWMutex
	keys        map[string]publicKey
	etag        string
	fetchedAt   time.Time
	maxAge      time.Duration
	lastAttempt time.Time
	// failures counts failed attempts in a row, up to maxFailures (enough for the backoff cap).
	failures int
	// flight is closed when the fetch in progress ends; nil when none is.
	flight chan struct{}

	group singleflight.Group
}

const (
	defaultMaxAge       = 5 * time.Minute
	maxMaxAge           = 24 * time.Hour
	defaultMinRefresh   = 30 * time.Second
	defaultFetchTimeout = 10 * time.Second
	maxBackoff          = 5 * time.Minute
	maxFailures         = 16
)

// newHTTPClient is the client for metadata and JWKS fetches unless the caller gives one: bounded
// connect, TLS handshake, response header and overall times, and no redirect to another origin.
func newHTTPClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 5 * time.Second
	t.ResponseHeaderTimeout = timeout
	return &http.Client{Transport: t, Timeout: timeout, CheckRedirect: sameOrigin(nil)}
}

// sameOrigin refuses a redirect to another scheme or host (an https JWKS sent to http, or to a
// host the issuer does not control), then asks next, if any, or allows up to 10 redirects.
func sameOrigin(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		first := via[0].URL
		if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
			return fmt.Errorf("refusing a redirect from %s://%s to %s://%s", first.Scheme, first.Host, req.URL.Scheme, req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

// withSameOrigin returns a copy of hc that also refuses redirects to another origin.
func withSameOrigin(hc *http.Client) *http.Client {
	c := *hc
	c.CheckRedirect = sameOrigin(hc.CheckRedirect)
	return &c
}

func (c *keyCache) lookup(kid string) (publicKey, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.keys[kid]
	return k, ok
}

// backoff is how long after the last attempt the next may start.
func (c *keyCache) backoff() time.Duration {
	limit := max(maxBackoff, c.minRefresh)
	d := c.minRefresh
	for i := 0; i < c.failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// get returns the key for kid, fetching the JWKS again when the kid is unknown and no attempt was
// made within the backoff. A miss while a fetch is in progress waits for that fetch: when a new
// key starts to sign, many requests meet it at once, and only the first may start the fetch. It
// returns by ctx's deadline.
func (c *keyCache) get(ctx context.Context, kid string) (publicKey, error) {
	if k, ok := c.lookup(kid); ok {
		return k, nil
	}
	c.mu.RLock()
	due := !c.now().Before(c.lastAttempt.Add(c.backoff()))
	flight := c.flight
	// Looked up again with the fetch's state: a fetch that ended since the first look has
	// stored its keys.
	k, known := c.keys[kid]
	c.mu.RUnlock()
	switch {
	case known:
		return k, nil
	case due:
		if err := c.refresh(ctx); err != nil {
			return publicKey{}, err
		}
	case flight != nil:
		select {
		case <-flight:
		case <-ctx.Done():
			return publicKey{}, fmt.Errorf("%w: waiting for the JWKS: %w", ErrJWKS, ctx.Err())
		}
	}
	if k, ok := c.lookup(kid); ok {
		return k, nil
	}
	return publicKey{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
}

// refresh fetches the JWKS; concurrent callers share one fetch, and each waits for it only until
// its own ctx ends.
func (c *keyCache) refresh(ctx context.Context) error {
	ch := c.group.DoChan("jwks", func() (any, error) {
		fctx, cancel := context.WithTimeout(context.Background(), c.fetchTimeout)
		defer cancel()
		return nil, c.fetch(fctx)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the JWKS: %w", ErrJWKS, ctx.Err())
	}
}

// fetch gets the JWKS once, with ctx, and records the attempt.
func (c *keyCache) fetch(ctx context.Context) (err error) {
	flight := make(chan struct{})
	c.mu.Lock()
	c.lastAttempt = c.now()
	c.flight = flight
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.flight = nil
		close(flight)
		if err != nil {
			c.failures = min(c.failures+1, maxFailures)
		} else {
			c.failures = 0
		}
		c.mu.Unlock()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
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
		return fmt.Errorf("%w: %w", ErrJWKS, err)
	}
	defer resp.Body.Close()
	now := c.now()
	maxAge := parseMaxAge(resp.Header.Get("Cache-Control"))
	if resp.StatusCode == http.StatusNotModified {
		if req.Header.Get("If-None-Match") == "" {
			return fmt.Errorf("%w: %s answered 304 to a request that was not conditional", ErrJWKS, c.url)
		}
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
			continue // a key this library cannot use, or will not trust, never verifies anything
		}
		keys[j.KeyID] = publicKey{key: pub, alg: j.Algorithm}
	}
	if len(keys) == 0 {
		// An empty set (an error page, a proxy) would refuse every token: keep the keys we have.
		return fmt.Errorf("%w: %s has no key this verifier can use", ErrJWKS, c.url)
	}
	c.mu.Lock()
	c.keys, c.etag, c.fetchedAt, c.maxAge = keys, resp.Header.Get("ETag"), now, maxAge
	c.mu.Unlock()
	return nil
}

// run refreshes the JWKS in the background when its max-age runs out, or after the backoff when
// the last attempt failed, until ctx ends.
func (c *keyCache) run(ctx context.Context) {
	for {
		c.mu.RLock()
		wait := c.maxAge - c.now().Sub(c.fetchedAt)
		if c.failures > 0 {
			wait = c.lastAttempt.Add(c.backoff()).Sub(c.now())
		}
		c.mu.RUnlock()
		wait = max(wait, c.minRefresh, time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
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
