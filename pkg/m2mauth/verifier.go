package m2mauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// acceptedAlgs are the asymmetric algorithms the token server signs with. none and HMAC are
// never accepted: an HMAC "signed" with a public key is the classic key-confusion attack.
var acceptedAlgs = map[string]bool{"ES256": true, "RS256": true, "EdDSA": true}

// Verifier verifies access tokens of one issuer locally, against its JWKS.
type Verifier struct {
	issuer     string
	keys       *keyCache
	allowJWT   bool
	now        func() time.Time
	httpClient *http.Client
}

// VerifierOption configures NewVerifier.
type VerifierOption func(*verifierConfig)

type verifierConfig struct {
	jwksURL    string
	httpClient *http.Client
	minRefresh time.Duration
	allowJWT   bool
	now        func() time.Time
}

// WithJWKSURL takes the JWKS from url instead of discovering it through the issuer's RFC 8414
// metadata.
func WithJWKSURL(url string) VerifierOption { return func(c *verifierConfig) { c.jwksURL = url } }

// WithHTTPClient fetches metadata and keys with hc.
func WithHTTPClient(hc *http.Client) VerifierOption {
	return func(c *verifierConfig) { c.httpClient = hc }
}

// WithMinRefreshInterval bounds how often an unknown kid makes the verifier fetch the JWKS again
// (default 30s), so that tokens with made-up kids cannot hammer the token server.
func WithMinRefreshInterval(d time.Duration) VerifierOption {
	return func(c *verifierConfig) { c.minRefresh = d }
}

// WithAllowJWTType also accepts tokens whose typ header is "JWT", for interoperability with
// issuers that do not set RFC 9068's "at+jwt".
func WithAllowJWTType() VerifierOption { return func(c *verifierConfig) { c.allowJWT = true } }

// WithClock makes the verifier read the time from now; for tests.
func WithClock(now func() time.Time) VerifierOption { return func(c *verifierConfig) { c.now = now } }

// NewVerifier returns a Verifier for issuerURL. It discovers the JWKS URL from the issuer's
// metadata (or takes WithJWKSURL), fetches the keys once, and refreshes them in the background
// until ctx ends.
func NewVerifier(ctx context.Context, issuerURL string, opts ...VerifierOption) (*Verifier, error) {
	cfg := verifierConfig{httpClient: http.DefaultClient, minRefresh: 30 * time.Second, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	issuerURL = strings.TrimSuffix(issuerURL, "/")
	if cfg.jwksURL == "" {
		url, err := discoverJWKS(ctx, cfg.httpClient, issuerURL)
		if err != nil {
			return nil, err
		}
		cfg.jwksURL = url
	}
	v := &Verifier{
		issuer:     issuerURL,
		allowJWT:   cfg.allowJWT,
		now:        cfg.now,
		httpClient: cfg.httpClient,
		keys:       &keyCache{url: cfg.jwksURL, httpClient: cfg.httpClient, minRefresh: cfg.minRefresh, now: cfg.now, keys: map[string]publicKey{}},
	}
	if err := v.keys.refresh(ctx); err != nil {
		return nil, err
	}
	go v.keys.run(ctx)
	return v, nil
}

func discoverJWKS(ctx context.Context, hc *http.Client, issuer string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: discovering the JWKS of %s: %v", ErrJWKS, issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: %s's metadata answered %d", ErrJWKS, issuer, resp.StatusCode)
	}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil {
		return "", fmt.Errorf("%w: %s's metadata is not JSON: %v", ErrJWKS, issuer, err)
	}
	// RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
	if strings.TrimSuffix(meta.Issuer, "/") != issuer || meta.JWKSURI == "" {
		return "", fmt.Errorf("%w: %s's metadata names issuer %q and jwks_uri %q", ErrJWKS, issuer, meta.Issuer, meta.JWKSURI)
	}
	return meta.JWKSURI, nil
}

// Claims are what a verified access token says.
type Claims struct {
	// ClientID is the client the token was issued to (client_id, and sub).
	ClientID string
	// Subject is sub.
	Subject string
	// Scopes are the granted scopes.
	Scopes []string
	// Audience is aud.
	Audience []string
	// Issuer is iss.
	Issuer string
	// IssuedAt, NotBefore and ExpiresAt are iat, nbf and exp.
	IssuedAt, NotBefore, ExpiresAt time.Time
	// ID is jti.
	ID string
	// Custom holds every claim not named above, such as the client's tokenClaims.
	Custom map[string]any
}

// AuthOption configures one Authenticate call.
type AuthOption func(*authConfig)

type authConfig struct {
	scopes     []string
	audience   string
	maxAge     time.Duration
	skew       time.Duration
	authorizer ScopeAuthorizer
}

// RequiredScopes requires every scope given (see DefaultScopeAuthorizer).
func RequiredScopes(scopes ...string) AuthOption {
	return func(c *authConfig) { c.scopes = append(c.scopes, scopes...) }
}

// Audience requires the token to be for aud.
func Audience(aud string) AuthOption { return func(c *authConfig) { c.audience = aud } }

// MaxTokenAge refuses tokens issued longer ago than d, for sensitive routes.
func MaxTokenAge(d time.Duration) AuthOption { return func(c *authConfig) { c.maxAge = d } }

// ClockSkew tolerates clocks that differ by up to d when checking exp, nbf, iat and the max age.
// The default is 0, as in Stytch.
func ClockSkew(d time.Duration) AuthOption { return func(c *authConfig) { c.skew = d } }

// WithScopeAuthorizer replaces DefaultScopeAuthorizer.
func WithScopeAuthorizer(a ScopeAuthorizer) AuthOption {
	return func(c *authConfig) { c.authorizer = a }
}

// registered are the claims Claims has fields for.
var registered = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true, "client_id": true, "scope": true}

// Authenticate verifies token and returns its claims. Errors wrap the sentinels of this package.
func (v *Verifier) Authenticate(ctx context.Context, token string, opts ...AuthOption) (*Claims, error) {
	cfg := authConfig{authorizer: DefaultScopeAuthorizer}
	for _, o := range opts {
		o(&cfg)
	}
	if err := checkAlg(token); err != nil {
		return nil, err
	}
	parserOpts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"ES256", "RS256", "EdDSA"}),
		jwt.WithIssuer(v.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.skew),
		jwt.WithTimeFunc(v.now),
	}
	if cfg.audience != "" {
		parserOpts = append(parserOpts, jwt.WithAudience(cfg.audience))
	}
	mc := jwt.MapClaims{}
	_, err := jwt.NewParser(parserOpts...).ParseWithClaims(token, mc, func(t *jwt.Token) (any, error) {
		typ, _ := t.Header["typ"].(string)
		if !strings.EqualFold(typ, "at+jwt") && !(v.allowJWT && strings.EqualFold(typ, "JWT")) {
			return nil, fmt.Errorf("%w: typ %q", ErrType, typ)
		}
		kid, _ := t.Header["kid"].(string)
		k, err := v.keys.get(ctx, kid)
		if err != nil {
			return nil, err
		}
		if t.Method.Alg() != k.alg {
			return nil, fmt.Errorf("%w: the token says %s, its key is %s", ErrAlgorithm, t.Method.Alg(), k.alg)
		}
		return k.key, nil
	})
	if err != nil {
		return nil, classify(err)
	}
	c := toClaims(mc)
	if cfg.maxAge > 0 {
		if c.IssuedAt.IsZero() || v.now().Sub(c.IssuedAt) > cfg.maxAge+cfg.skew {
			return nil, fmt.Errorf("%w: issued at %s, the limit is %s", ErrTooOld, c.IssuedAt.UTC().Format(time.RFC3339), cfg.maxAge)
		}
	}
	if err := cfg.authorizer(c.Scopes, cfg.scopes); err != nil {
		if !errors.Is(err, ErrMissingScope) {
			err = fmt.Errorf("%w: %w", ErrMissingScope, err)
		}
		return nil, err
	}
	return c, nil
}

// checkAlg refuses none, HMAC and every other algorithm the token server does not sign with,
// before anything else looks at the token.
func checkAlg(token string) error {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return fmt.Errorf("%w: not three dot-separated parts", ErrMalformed)
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return fmt.Errorf("%w: the header is not base64url", ErrMalformed)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("%w: the header is not JSON", ErrMalformed)
	}
	if !acceptedAlgs[h.Alg] {
		return fmt.Errorf("%w: %q", ErrAlgorithm, h.Alg)
	}
	return nil
}

// classify maps golang-jwt's errors onto this package's sentinels, keeping both in the chain.
func classify(err error) error {
	for _, own := range []error{ErrType, ErrUnknownKey, ErrAlgorithm, ErrJWKS} {
		if errors.Is(err, own) {
			return err
		}
	}
	pairs := []struct{ theirs, ours error }{
		{jwt.ErrTokenExpired, ErrExpired},
		{jwt.ErrTokenNotValidYet, ErrNotYetValid},
		{jwt.ErrTokenUsedBeforeIssued, ErrNotYetValid},
		{jwt.ErrTokenInvalidIssuer, ErrIssuer},
		{jwt.ErrTokenInvalidAudience, ErrAudience},
		{jwt.ErrTokenSignatureInvalid, ErrSignature},
		{jwt.ErrTokenUnverifiable, ErrAlgorithm},
		{jwt.ErrTokenMalformed, ErrMalformed},
		{jwt.ErrTokenRequiredClaimMissing, ErrMalformed},
	}
	for _, p := range pairs {
		if errors.Is(err, p.theirs) {
			return fmt.Errorf("%w: %w", p.ours, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

func toClaims(mc jwt.MapClaims) *Claims {
	c := &Claims{Custom: map[string]any{}}
	c.Issuer, _ = mc.GetIssuer()
	c.Subject, _ = mc.GetSubject()
	aud, _ := mc.GetAudience()
	c.Audience = aud
	if t, _ := mc.GetIssuedAt(); t != nil {
		c.IssuedAt = t.Time
	}
	if t, _ := mc.GetNotBefore(); t != nil {
		c.NotBefore = t.Time
	}
	if t, _ := mc.GetExpirationTime(); t != nil {
		c.ExpiresAt = t.Time
	}
	c.ClientID, _ = mc["client_id"].(string)
	c.ID, _ = mc["jti"].(string)
	if s, _ := mc["scope"].(string); s != "" {
		c.Scopes = strings.Fields(s)
	}
	for k, val := range mc {
		if !registered[k] {
			c.Custom[k] = val
		}
	}
	return c
}
