package m2mauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// ErrIntrospection: the introspection endpoint could not be asked, or refused the service's own
// credentials. It says nothing about the token.
var ErrIntrospection = errors.New("m2mauth: introspection unavailable")

// Introspection is the token server's answer about a token (RFC 7662 §2.2).
type Introspection struct {
	// Bound is true for a token bound to a DPoP key or a client certificate (cnf), which
	// Introspect reports not Active: only a proof of the key for the request, or the TLS client
	// certificate of the request, makes it usable, and Introspect sees no request. Verify such
	// tokens with Verifier.AuthenticateRequest.
	Bound bool
	// Active is false for a token that is expired, not the server's, bound to a key (Bound), or whose client is now
	// disabled or deleted; the other fields are then empty.
	Active    bool
	ClientID  string
	Subject   string
	Scopes    []string
	Audience  []string
	Issuer    string
	IssuedAt  time.Time
	ExpiresAt time.Time
	ID        string
}

// IntrospectorOption configures NewIntrospector.
type IntrospectorOption func(*introspectorConfig)

type introspectorConfig struct {
	audiences   []string
	anyAudience bool
	cacheTTL    time.Duration
	maxCache    int
	timeout     time.Duration
	endpoint    string
	issuers     []string
	now         func() time.Time
}

// IntrospectionIssuers reports tokens of these issuers as active, instead of tokens of the issuer
// the Secret names: during a move to another issuer, both.
func IntrospectionIssuers(issuers ...string) IntrospectorOption {
	return func(c *introspectorConfig) {
		for _, iss := range issuers {
			c.issuers = append(c.issuers, strings.TrimSuffix(iss, "/"))
		}
	}
}

// IntrospectionAudiences makes the introspector report a token as active only when its aud
// contains one of audiences, the identifiers of this service, as a Verifier's WithAudiences does.
// It, or IntrospectionAnyAudience, is required.
func IntrospectionAudiences(audiences ...string) IntrospectorOption {
	return func(c *introspectorConfig) { c.audiences = append(c.audiences, audiences...) }
}

// IntrospectionAnyAudience reports tokens for any audience as active.
func IntrospectionAnyAudience() IntrospectorOption {
	return func(c *introspectorConfig) { c.anyAudience = true }
}

// IntrospectionCacheTTL is how long an answer is reused for the same token (default 10s; 0
// asks every time). An active answer is never reused past the token's expiry. The TTL is how long
// a disabled client's token may still pass.
func IntrospectionCacheTTL(d time.Duration) IntrospectorOption {
	return func(c *introspectorConfig) { c.cacheTTL = d }
}

// IntrospectionEndpoint asks url instead of the /oauth2/introspect next to the Secret's token_url
// (the in-cluster door, with a public door; the issuer's when token_url is not /oauth2/token).
func IntrospectionEndpoint(url string) IntrospectorOption {
	return func(c *introspectorConfig) { c.endpoint = url }
}

// IntrospectionTimeout bounds each request to the endpoint (default 5s), within the caller's
// context.
func IntrospectionTimeout(d time.Duration) IntrospectorOption {
	return func(c *introspectorConfig) { c.timeout = d }
}

// Introspector asks the token server whether a token is still active (RFC 7662), authenticated
// with the service's own client credentials from its mounted Secret. It is the slower,
// revocation-aware path: a network round trip on every cache miss, in exchange for seeing at
// once (within the cache TTL) that a client was disabled or deleted, which a Verifier sees only
// when the token expires.
type Introspector struct {
	creds    *fileTokenSource
	endpoint string
	hc       *http.Client
	cfg      introspectorConfig
	// asking collapses concurrent misses for one token into one request.
	asking singleflight.Group

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedIntrospection
}

type cachedIntrospection struct {
	result Introspection
	until  time.Time
}

// NewIntrospector reads the service's credentials (client_id and issuer, and client_secret or a
// generated key pair's private_key) from the Secret mounted at dir, and reads them again when the
// token server refuses them (a rotation). IntrospectionAudiences, or IntrospectionAnyAudience, is
// required.
func NewIntrospector(dir string, opts ...IntrospectorOption) (*Introspector, error) {
	cfg := introspectorConfig{cacheTTL: 10 * time.Second, maxCache: 10000, timeout: 5 * time.Second, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case len(cfg.audiences) == 0 && !cfg.anyAudience:
		return nil, ErrNoAudience
	case len(cfg.audiences) > 0 && cfg.anyAudience:
		return nil, errors.New("m2mauth: IntrospectionAudiences and IntrospectionAnyAudience contradict each other")
	case cfg.timeout <= 0:
		return nil, fmt.Errorf("m2mauth: IntrospectionTimeout(%s) is not positive", cfg.timeout)
	}
	creds := &fileTokenSource{dir: dir, withIssuer: true}
	if err := creds.reload(); err != nil {
		return nil, err
	}
	endpoint := cfg.endpoint
	if endpoint == "" {
		// Next to the token endpoint the Secret names, which is the in-cluster Service's when
		// the issuer is a public door: pods never go out through it.
		base, ok := strings.CutSuffix(creds.current().TokenURL, "/oauth2/token")
		if !ok {
			base = strings.TrimSuffix(creds.issuer(), "/")
		}
		endpoint = base + "/oauth2/introspect"
	}
	if len(cfg.issuers) == 0 {
		cfg.issuers = []string{strings.TrimSuffix(creds.issuer(), "/")}
	}
	hc := newHTTPClient(cfg.timeout)
	hc = withCAFile(hc, filepath.Join(dir, secretKeyCA), true)
	// The request carries the service's credentials: it is never sent anywhere else, and a
	// redirect (which would also turn the POST into a GET) is an error.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Introspector{creds: creds, endpoint: endpoint, hc: hc, cfg: cfg, cache: map[[sha256.Size]byte]cachedIntrospection{}}, nil
}

// forThisService reports whether an active answer is about a token for this service, from the
// issuer the service trusts.
func (i *Introspector) forThisService(r *Introspection) bool {
	if !slices.Contains(i.cfg.issuers, strings.TrimSuffix(r.Issuer, "/")) {
		return false
	}
	if i.cfg.anyAudience {
		return true
	}
	for _, a := range r.Audience {
		if slices.Contains(i.cfg.audiences, a) {
			return true
		}
	}
	return false
}

// Introspect returns the token server's answer about token, from the cache when it is fresh. It
// returns by ctx's deadline. An error means no answer (ErrIntrospection), never an inactive token.
func (i *Introspector) Introspect(ctx context.Context, token string) (*Introspection, error) {
	key := sha256.Sum256([]byte(token))
	now := i.cfg.now()
	i.mu.Lock()
	if c, ok := i.cache[key]; ok && now.Before(c.until) {
		i.mu.Unlock()
		r := c.result
		return &r, nil
	}
	i.mu.Unlock()

	ch := i.asking.DoChan(string(key[:]), func() (any, error) {
		// Shared by every caller for this token, so bounded by the timeout, not by one caller.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), i.cfg.timeout)
		defer cancel()
		return i.lookup(ctx, key, token, now)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		r := res.Val.(Introspection)
		return &r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrIntrospection, ctx.Err())
	}
}

// lookup asks the token server and caches the answer.
func (i *Introspector) lookup(ctx context.Context, key [sha256.Size]byte, token string, now time.Time) (Introspection, error) {
	creds := i.creds.current()
	res, status, err := i.ask(ctx, creds, token)
	if err == nil && status == http.StatusUnauthorized {
		// The service's own credentials may have rotated under it: read the files again, once.
		if rerr := i.creds.reload(); rerr == nil {
			if fresh := i.creds.current(); !fresh.same(creds) {
				res, status, err = i.ask(ctx, fresh, token)
			}
		}
	}
	if err != nil {
		return Introspection{}, err
	}
	if status != http.StatusOK {
		return Introspection{}, fmt.Errorf("%w: %s answered %d", ErrIntrospection, i.endpoint, status)
	}
	if res.Active && !i.forThisService(res) {
		// Active, but minted for another service (or issuer): not a token for this one.
		res = &Introspection{}
	}
	if i.cfg.cacheTTL > 0 {
		until := now.Add(i.cfg.cacheTTL)
		if res.Active && !res.ExpiresAt.IsZero() && res.ExpiresAt.Before(until) {
			until = res.ExpiresAt
		}
		i.mu.Lock()
		if len(i.cache) >= i.cfg.maxCache {
			// Expired answers go first; if none has, the one that expires soonest.
			soonest, found := [sha256.Size]byte{}, false
			for k, c := range i.cache {
				if !now.Before(c.until) {
					delete(i.cache, k)
				} else if !found || c.until.Before(i.cache[soonest].until) {
					soonest, found = k, true
				}
			}
			if len(i.cache) >= i.cfg.maxCache && found {
				delete(i.cache, soonest)
			}
		}
		i.cache[key] = cachedIntrospection{result: *res, until: until}
		i.mu.Unlock()
	}
	return *res, nil
}

func (i *Introspector) ask(ctx context.Context, creds clientCreds, token string) (*Introspection, int, error) {
	ctx, cancel := context.WithTimeout(ctx, i.cfg.timeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	if creds.key != nil {
		// A generated key pair authenticates with an assertion, as at the token endpoint.
		assertion, err := signAssertion(creds, i.cfg.now())
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrIntrospection, err)
		}
		form.Set("client_id", creds.ClientID)
		form.Set("client_assertion_type", jwtBearer)
		form.Set("client_assertion", assertion)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, i.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrIntrospection, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if creds.key == nil {
		// RFC 6749 §2.3.1: the credentials are form-encoded before they go into Basic.
		req.SetBasicAuth(url.QueryEscape(creds.ClientID), url.QueryEscape(creds.ClientSecret))
	}
	resp, err := i.hc.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrIntrospection, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, nil
	}
	var raw struct {
		Active   bool            `json:"active"`
		ClientID string          `json:"client_id"`
		Sub      string          `json:"sub"`
		Scope    string          `json:"scope"`
		Aud      json.RawMessage `json:"aud"`
		Iss      string          `json:"iss"`
		Iat      float64         `json:"iat"`
		Exp      float64         `json:"exp"`
		Jti      string          `json:"jti"`
		Type     string          `json:"token_type"`
		Cnf      json.RawMessage `json:"cnf"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&raw); err != nil {
		return nil, 0, fmt.Errorf("%w: the answer is not JSON: %v", ErrIntrospection, err)
	}
	if !raw.Active {
		return &Introspection{}, http.StatusOK, nil
	}
	if len(raw.Cnf) > 0 || strings.EqualFold(raw.Type, "DPoP") {
		// A token bound to a key is worth something only with a proof of the key for this
		// request, which Introspect does not see: taken as active, a stolen bound token would
		// pass here as a bearer token (review).
		return &Introspection{Bound: true}, http.StatusOK, nil
	}
	out := &Introspection{Active: true, ClientID: raw.ClientID, Subject: raw.Sub, Scopes: strings.Fields(raw.Scope), Issuer: raw.Iss, ID: raw.Jti}
	var one string
	if json.Unmarshal(raw.Aud, &one) == nil && one != "" {
		out.Audience = []string{one}
	} else {
		_ = json.Unmarshal(raw.Aud, &out.Audience)
	}
	if raw.Iat > 0 {
		out.IssuedAt = time.Unix(int64(raw.Iat), 0)
	}
	if raw.Exp > 0 {
		out.ExpiresAt = time.Unix(int64(raw.Exp), 0)
	}
	return out, http.StatusOK, nil
}
