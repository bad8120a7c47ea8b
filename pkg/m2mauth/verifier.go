package m2mauth

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// acceptedAlgs are the asymmetric algorithms the token server signs with. none and HMAC are
// never accepted: an HMAC "signed" with a public key is the classic key-confusion attack.
var acceptedAlgs = map[string]bool{"ES256": true, "RS256": true, "EdDSA": true}

// Verifier verifies access tokens of one issuer, for one service (its audiences), locally,
// against the issuer's JWKS. Close stops its background key refresh.
type Verifier struct {
	issuer      string
	audiences   []string
	anyAudience bool
	keys        *keyCache
	// revocations is the issuer's revocation list; nil without revocation checking.
	revocations *revocationList
	allowJWT    bool
	now         func() time.Time
	stop        context.CancelFunc
	dpop        *dpopState
}

// VerifierOption configures NewVerifier.
type VerifierOption func(*verifierConfig)

type verifierConfig struct {
	audiences    []string
	anyAudience  bool
	jwksURL      string
	discoveryURL string
	httpClient   *http.Client
	caFile       string
	minRefresh   time.Duration
	fetchTimeout time.Duration
	allowJWT     bool
	now          func() time.Time
	dpop         dpopConfig
	revocation   revocationConfig
	// bad collects options given values that cannot work, for NewVerifier to refuse.
	bad []string
}

// ErrNoAudience is NewVerifier's error when it is given neither WithAudiences nor
// WithAnyAudience: RFC 9068 §4 requires a resource server to check that a token is for it.
var ErrNoAudience = errors.New("m2mauth: a verifier needs WithAudiences (the audiences this service accepts) or, explicitly, WithAnyAudience")

// WithAudiences makes the verifier accept only tokens whose aud contains one of audiences: the
// identifiers of this service. Given more than once, the lists add up.
func WithAudiences(audiences ...string) VerifierOption {
	return func(c *verifierConfig) { c.audiences = append(c.audiences, audiences...) }
}

// WithAnyAudience makes the verifier accept tokens for any audience. Only for a service that
// authorises by client ID or scope alone and accepts that a token minted for another service
// works on it too.
func WithAnyAudience() VerifierOption { return func(c *verifierConfig) { c.anyAudience = true } }

// WithFetchTimeout bounds each metadata and JWKS fetch (default 10s); it must be positive.
func WithFetchTimeout(d time.Duration) VerifierOption {
	return func(c *verifierConfig) {
		if d <= 0 {
			c.bad = append(c.bad, fmt.Sprintf("WithFetchTimeout(%s) is not positive", d))
		}
		c.fetchTimeout = d
	}
}

// WithJWKSURL takes the JWKS from url instead of discovering it through the issuer's RFC 8414
// metadata.
func WithJWKSURL(url string) VerifierOption { return func(c *verifierConfig) { c.jwksURL = url } }

// WithDiscoveryURL fetches the issuer's RFC 8414 metadata under baseURL instead of under the
// issuer, which it must still name: a resource server inside the cluster whose token server
// serves a public door under the issuer's name passes the in-cluster URL (the base of its
// credentials Secret's token_url), and the token server answers there with the keys' in-cluster
// URL, so that neither discovery nor key fetches go out through the public door.
func WithDiscoveryURL(baseURL string) VerifierOption {
	return func(c *verifierConfig) { c.discoveryURL = strings.TrimSuffix(baseURL, "/") }
}

// WithHTTPClient fetches metadata and keys with hc instead of a client with connect, TLS and
// overall timeouts. Redirects to another scheme or host are refused with hc too.
func WithHTTPClient(hc *http.Client) VerifierOption {
	return func(c *verifierConfig) { c.httpClient = hc }
}

// WithMinRefreshInterval is the least time between two JWKS fetch attempts that tokens with
// unknown kids may cause (default 30s), successful or not; after failures the gap doubles each
// time, up to 5 minutes, so that neither made-up kids nor a failing token server cause a stream of
// fetches.
//
// It must be at least a second: less would let every token with a made-up kid cause a fetch.
func WithMinRefreshInterval(d time.Duration) VerifierOption {
	return func(c *verifierConfig) {
		if d < time.Second {
			c.bad = append(c.bad, fmt.Sprintf("WithMinRefreshInterval(%s) is under a second", d))
		}
		c.minRefresh = d
	}
}

// WithAllowJWTType also accepts tokens whose typ header is "JWT", for interoperability with
// issuers that do not set RFC 9068's "at+jwt".
func WithAllowJWTType() VerifierOption { return func(c *verifierConfig) { c.allowJWT = true } }

// WithClock makes the verifier read the time from now; for tests.
func WithClock(now func() time.Time) VerifierOption { return func(c *verifierConfig) { c.now = now } }

// NewVerifier returns a Verifier for issuerURL and the audiences of WithAudiences (one of it and
// WithAnyAudience is required). It discovers the JWKS URL from the issuer's metadata (or takes
// WithJWKSURL) and fetches the keys once; ctx bounds that construction only. The keys are then
// refreshed in the background until Close.
//
// When the metadata names a revocation list (m2m_revocation_list_uri, this token server's
// extension), or WithRevocationListURL names one, the verifier fetches it once here, fails when
// that fetch fails (unless AcceptWhenRevocationUnavailable), then keeps it fresh in the
// background and refuses the tokens it revokes (ErrRevoked). A list older than the staleness
// bound (WithRevocationStaleness, default a minute) refuses every token
// (ErrRevocationUnavailable). WithoutRevocation turns this off.
func NewVerifier(ctx context.Context, issuerURL string, opts ...VerifierOption) (*Verifier, error) {
	cfg := verifierConfig{minRefresh: defaultMinRefresh, fetchTimeout: defaultFetchTimeout, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.bad) > 0 {
		return nil, fmt.Errorf("m2mauth: %s", strings.Join(cfg.bad, "; "))
	}
	if len(cfg.audiences) == 0 && !cfg.anyAudience {
		return nil, ErrNoAudience
	}
	if len(cfg.audiences) > 0 && cfg.anyAudience {
		return nil, errors.New("m2mauth: WithAudiences and WithAnyAudience contradict each other")
	}
	if slices.Contains(cfg.audiences, "") {
		return nil, errors.New("m2mauth: WithAudiences was given an empty audience")
	}
	given := cfg.httpClient
	if cfg.httpClient == nil {
		cfg.httpClient = newHTTPClient(cfg.fetchTimeout)
		if cfg.caFile != "" {
			cfg.httpClient = withCAFile(cfg.httpClient, cfg.caFile, false)
		}
	} else {
		cfg.httpClient = withSameOrigin(cfg.httpClient)
	}
	issuerURL = strings.TrimSuffix(issuerURL, "/")
	var revocationURL string
	if cfg.jwksURL == "" {
		dctx, cancel := context.WithTimeout(ctx, cfg.fetchTimeout)
		meta, err := discoverJWKS(dctx, cfg.httpClient, issuerURL, cmp.Or(cfg.discoveryURL, issuerURL))
		cancel()
		if err != nil {
			return nil, err
		}
		cfg.jwksURL, revocationURL = meta.JWKSURI, meta.RevocationListURI
	}
	keys := &keyCache{url: cfg.jwksURL, httpClient: cfg.httpClient, minRefresh: cfg.minRefresh, fetchTimeout: cfg.fetchTimeout, now: cfg.now, keys: map[string]publicKey{}}
	if err := keys.refresh(ctx); err != nil {
		return nil, err
	}
	revCfg := cfg
	if given != nil && given.Timeout != 0 {
		// The deadline of each request bounds a long-poll instead of the client's timeout.
		hc := *cfg.httpClient
		hc.Timeout = 0
		revCfg.httpClient = &hc
	}
	if given == nil {
		// A long-poll outlasts the fetch timeout of the keys' client.
		revCfg.httpClient = newHTTPClient(cfg.fetchTimeout + maxRevocationWait)
		if cfg.caFile != "" {
			revCfg.httpClient = withCAFile(revCfg.httpClient, cfg.caFile, false)
		}
	}
	revocations, err := newRevocationList(&revCfg, issuerURL, revocationURL, keys)
	if err != nil {
		return nil, err
	}
	if revocations != nil {
		if err := revocations.fetch(ctx, 0); err != nil && !revocations.accept {
			return nil, err
		}
	}
	// The refreshers outlive ctx: a deadline on construction must not stop them.
	bg, stop := context.WithCancel(context.Background())
	go keys.run(bg)
	if revocations != nil {
		go revocations.run(bg)
	}
	return &Verifier{
		issuer:      issuerURL,
		audiences:   slices.Clone(cfg.audiences),
		anyAudience: cfg.anyAudience,
		keys:        keys,
		revocations: revocations,
		allowJWT:    cfg.allowJWT,
		now:         cfg.now,
		stop:        stop,
		dpop:        newDPoPState(cfg.dpop),
	}, nil
}

// Close stops the background key and revocation-list refresh. Authenticate keeps working with
// the keys it has, and still fetches them for an unknown kid; the revocation list it has goes
// stale after the staleness bound.
func (v *Verifier) Close() { v.stop() }

// issuerMetadata is what the verifier reads of the issuer's metadata.
type issuerMetadata struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
	// RevocationListURI is this token server's extension, not a registered field.
	RevocationListURI string `json:"m2m_revocation_list_uri"`
}

// discoverJWKS reads the jwks_uri (and revocation list) of issuer's metadata, fetched under base.
func discoverJWKS(ctx context.Context, hc *http.Client, issuer, base string) (issuerMetadata, error) {
	// Metadata over plain HTTP could name anyone's keys.
	if strings.HasPrefix(issuer, "https://") && !strings.HasPrefix(base, "https://") {
		return issuerMetadata{}, fmt.Errorf("%w: the https issuer %s's metadata would come over plain HTTP from %s", ErrJWKS, issuer, base)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		return issuerMetadata{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return issuerMetadata{}, fmt.Errorf("%w: discovering the JWKS of %s: %w", ErrJWKS, issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return issuerMetadata{}, fmt.Errorf("%w: %s's metadata answered %d", ErrJWKS, issuer, resp.StatusCode)
	}
	var meta issuerMetadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil {
		return issuerMetadata{}, fmt.Errorf("%w: %s's metadata is not JSON: %v", ErrJWKS, issuer, err)
	}
	// RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
	if strings.TrimSuffix(meta.Issuer, "/") != issuer || meta.JWKSURI == "" {
		return issuerMetadata{}, fmt.Errorf("%w: %s's metadata names issuer %q and jwks_uri %q", ErrJWKS, issuer, meta.Issuer, meta.JWKSURI)
	}
	// The keys of an https issuer come over https too.
	if strings.HasPrefix(issuer, "https://") && !strings.HasPrefix(meta.JWKSURI, "https://") {
		return issuerMetadata{}, fmt.Errorf("%w: the https issuer %s names a jwks_uri that is not https: %q", ErrJWKS, issuer, meta.JWKSURI)
	}
	return meta, nil
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
	// requireDPoP, proof and cert: see checkBinding.
	requireDPoP bool
	proof       *proofBinding
	cert        *certBinding
}

// RequiredScopes requires every scope given (see DefaultScopeAuthorizer).
func RequiredScopes(scopes ...string) AuthOption {
	return func(c *authConfig) { c.scopes = append(c.scopes, scopes...) }
}

// RequiredAudience requires, for this call, the token to be for aud, on top of the verifier's
// audiences. It is named as RequiredScopes is, the other per-call requirement.
func RequiredAudience(aud string) AuthOption { return func(c *authConfig) { c.audience = aud } }

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
// A token bound to a DPoP key (with a cnf claim) is refused (ErrDPoPBound), and one bound to a
// client certificate (cnf x5t#S256) too (ErrCertificateBound): AuthenticateRequest verifies them
// with the request's proof or TLS client certificate.
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
	if err := cfg.checkBinding(c); err != nil {
		return nil, err
	}
	if err := v.checkAudience(c.Audience, cfg.audience); err != nil {
		return nil, err
	}
	if v.revocations != nil {
		if err := v.revocations.check(cmp.Or(c.ClientID, c.Subject), c.IssuedAt); err != nil {
			return nil, err
		}
	}
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

// checkAudience requires aud to contain one of the verifier's audiences (unless it accepts any)
// and, when the call names one, that one too.
func (v *Verifier) checkAudience(aud []string, also string) error {
	if !v.anyAudience && !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(v.audiences, a) }) {
		return fmt.Errorf("%w: the token is for %q, this service accepts %q", ErrAudience, aud, v.audiences)
	}
	if also != "" && !slices.Contains(aud, also) {
		return fmt.Errorf("%w: the token is for %q, not %q", ErrAudience, aud, also)
	}
	return nil
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
