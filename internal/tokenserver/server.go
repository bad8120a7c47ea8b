// Package tokenserver is the OAuth 2.0 authorization server for M2MClients: the client
// credentials grant (RFC 6749 §4.4) issuing RFC 9068 JWT access tokens, the JWKS, authorization
// server metadata (RFC 8414) and token introspection (RFC 7662).
package tokenserver

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// GrantClientCredentials is the only grant type served.
const GrantClientCredentials = "client_credentials"

// JWKSMaxAge is how long verifiers may cache the JWKS. Keys are published longer than this
// before they sign (signingkeys.Policy.Validate), so a cached JWKS never lacks a key that signs.
const JWKSMaxAge = signingkeys.JWKSMaxAge

// Config is what a Server needs.
type Config struct {
	// IssuerURL is the issuer; every URL the server advertises derives from it.
	IssuerURL string
	// DefaultAudience is the audience of tokens for clients with no spec.audiences. Empty means
	// IssuerURL: every token carries an "aud" (RFC 9068 §2.2), and for a client that names no
	// audience it is "a client of this installation", as Stytch's project audience is.
	DefaultAudience string
	Clients         ClientSource
	Keys            KeySource
	Clock           clock.PassiveClock
	// Ready reports whether the server may receive traffic.
	Ready func() error
	// Registry receives the server's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// PerClientMetrics labels the token counters by client ID too, not only by namespace: one
	// series per client that asks, which at 100,000 clients costs hundreds of MiB.
	PerClientMetrics bool
	// Staleness reports how old the client cache's view may be, for the metrics; optional.
	Staleness func() time.Duration
	// CachedClients reports how many clients are cached, for the metrics; optional.
	CachedClients func() int
	// ServiceAccounts verifies ServiceAccount tokens presented as client assertions; nil refuses
	// them.
	ServiceAccounts ServiceAccountTokens
	// Federation verifies tokens of the federated issuers; nil trusts none.
	Federation *Federation
	// KeyLoadErrors reports how many signing-key Secret versions did not load; optional.
	KeyLoadErrors func() int64
}

// Server serves the OAuth endpoints.
type Server struct {
	cfg     Config
	prefix  string
	metrics *metrics
	// decoy is compared against when the client ID is unknown, so that an unknown client costs
	// the same work as a wrong secret: its entries, and MACs under decoyStatusKeys.
	decoy           *m2mv1alpha1.M2MClient
	decoyStatusKeys *statusmac.Set
	// replays holds the jtis of accepted private_key_jwt assertions.
	replays replayCache
	// decoyKeys verify, by algorithm, private_key_jwt assertions of unknown clients and of
	// unknown kids, so that the work does not tell them apart from a wrong signature.
	decoyKeys map[string]crypto.PublicKey
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	iss, err := issuer.Parse(cfg.IssuerURL)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(iss)
	if err != nil {
		return nil, err
	}
	cfg.IssuerURL = iss
	if cfg.DefaultAudience, err = EffectiveDefaultAudience(iss, cfg.DefaultAudience); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	s := &Server{cfg: cfg, prefix: strings.TrimSuffix(u.Path, "/")}
	decoyKey, err := statusmac.Generate(statusmac.StateActive, time.Now())
	if err != nil {
		return nil, err
	}
	s.decoyStatusKeys = &statusmac.Set{Keys: []*statusmac.Key{decoyKey}}
	s.decoy = &m2mv1alpha1.M2MClient{Status: m2mv1alpha1.M2MClientStatus{ClientID: "decoy"}}
	for range 2 {
		secret, err := credentials.NewSecret()
		if err != nil {
			return nil, err
		}
		s.decoy.Status.AcceptedSecrets = append(s.decoy.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(secret)})
	}
	if err := s.decoyStatusKeys.Seal(s.decoy); err != nil {
		return nil, err
	}
	if s.decoyKeys, err = decoyPublicKeys(); err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// EffectiveDefaultAudience is the "aud" of tokens for clients with no spec.audiences on a server
// with this issuer and --default-audience: the flag, or the issuer when it is empty. A configured
// audience follows the rule of spec.audiences.
func EffectiveDefaultAudience(issuerURL, configured string) (string, error) {
	if configured == "" {
		return issuerURL, nil
	}
	if len(configured) > 512 || strings.IndexFunc(configured, func(r rune) bool { return r < '!' || r > '~' }) >= 0 {
		return "", fmt.Errorf("--default-audience %q: an audience is 1 to 512 printable ASCII characters without spaces, as in spec.audiences", configured)
	}
	return configured, nil
}

// Handler routes the server's endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(s.prefix+issuer.TokenPath, s.metrics.timed("token", s.token))
	mux.Handle(s.prefix+"/oauth2/introspect", s.metrics.timed("introspect", s.introspect))
	mux.Handle(s.prefix+"/.well-known/jwks.json", s.metrics.timed("jwks", s.jwks))
	mux.HandleFunc(s.prefix+"/.well-known/oauth-authorization-server", s.discovery)
	mux.HandleFunc(s.prefix+"/.well-known/openid-configuration", s.discovery)
	if s.prefix != "" {
		// RFC 8414 §3.1: for an issuer with a path, the well-known segment goes first.
		mux.HandleFunc("/.well-known/oauth-authorization-server"+s.prefix, s.discovery)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.cfg.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}

// MetricsHandler serves the Prometheus metrics. It is served on its own address, never on the
// token port: per-client series and failure reasons would tell any caller which clients exist.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})
}

// tokenResponse is the successful answer (RFC 6749 §5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// token is the pipeline: parse, authenticate the client, check grant, scope and audience, sign,
// write.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	req, client, ok := s.authenticated(w, r)
	if !ok {
		return
	}
	if req.grantType == "" {
		s.fail(w, badRequest("no_grant_type", "the grant_type parameter is required"), client)
		return
	}
	if req.grantType != GrantClientCredentials {
		s.fail(w, newError(ErrUnsupportedGrantType, http.StatusBadRequest, "grant_type", "only the client_credentials grant is supported"), client)
		return
	}
	scopes, bad := grantScopes(client, req)
	if bad != nil {
		s.fail(w, bad, client)
		return
	}
	audience, bad := s.audience(client, req)
	if bad != nil {
		s.fail(w, bad, client)
		return
	}
	signed, ttl, bad := s.sign(client, scopes, audience)
	if bad != nil {
		s.fail(w, bad, client)
		return
	}
	s.metrics.issued.WithLabelValues(s.metrics.labels(client)...).Inc()
	noStore(w)
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: signed, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), Scope: strings.Join(scopes, " ")})
}

// fail counts the failure, for client (nil before a client is authenticated), and writes it.
func (s *Server) fail(w http.ResponseWriter, e *oauthError, client *m2mv1alpha1.M2MClient) {
	s.metrics.failures.WithLabelValues(append([]string{e.reason}, s.metrics.labels(client)...)...).Inc()
	writeError(w, e)
}

// authenticated parses a request and authenticates its client, the first steps of both the token
// and the introspection endpoint. When it returns false it has written the error.
func (s *Server) authenticated(w http.ResponseWriter, r *http.Request) (*tokenRequest, *m2mv1alpha1.M2MClient, bool) {
	req, bad := parseRequest(w, r)
	if bad == nil {
		var client *m2mv1alpha1.M2MClient
		if client, bad = s.authenticate(r.Context(), req); bad == nil {
			return req, client, true
		}
	}
	s.fail(w, bad, nil)
	return nil, nil, false
}

// lookup finds the one client whose authenticated status.clientID is id. A client whose status
// names id without the manager's MAC is not it (someone wrote that status), and if two are, none
// is, so that no client authenticates as another.
func (s *Server) lookup(id string, st *keyState) (*m2mv1alpha1.M2MClient, bool) {
	if st == nil || id == "" {
		return nil, false
	}
	var found *m2mv1alpha1.M2MClient
	for _, c := range s.cfg.Clients.Candidates(id) {
		if !st.trustsClientID(c) {
			continue
		}
		if found != nil {
			return nil, false
		}
		found = c
	}
	return found, found != nil
}

// authenticate finds the client and checks its secret. An unknown client, a wrong secret and a
// disabled client give the same error after the same work: one hash, compared in constant time
// with each accepted entry, and each entry's MAC verified (a decoy client for an unknown one).
func (s *Server) authenticate(ctx context.Context, req *tokenRequest) (*m2mv1alpha1.M2MClient, *oauthError) {
	if req.assertionGiven {
		return s.authenticateServiceAccount(ctx, req)
	}
	st := s.cfg.Keys.current()
	client, found := s.lookup(req.clientID, st)
	var matched bool
	if found {
		current := credentials.AcceptsCurrent(client, credentials.FormSecret)
		matched = credentials.VerifyWith(client.Status.AcceptedSecrets, req.clientSecret, s.cfg.Clock.Now(), func(e *m2mv1alpha1.AcceptedSecret) bool {
			// A key pair's entry never accepts a secret: its hash is of public values.
			return credentials.FormOf(e) == credentials.FormSecret && st.trustsEntry(client, e) && (current || e.ExpiresAt != nil)
		})
	} else {
		credentials.VerifyWith(s.decoy.Status.AcceptedSecrets, req.clientSecret, s.cfg.Clock.Now(), func(e *m2mv1alpha1.AcceptedSecret) bool {
			return s.decoyStatusKeys.VerifyEntry(s.decoy, e)
		})
	}
	switch {
	case req.clientID == "" || req.clientSecret == "":
		return nil, invalidClient("no_credentials")
	case !found:
		return nil, invalidClient("unknown_client")
	case !matched:
		return nil, invalidClient("wrong_secret")
	case client.Spec.Disabled:
		return nil, invalidClient("disabled")
	}
	return client, nil
}

// authenticateServiceAccount checks a client assertion of the client named by client_id: a
// Kubernetes ServiceAccount token of this cluster, or a token of a federated issuer. This is a
// federated profile, not RFC 7523 §3 client authentication (the token's sub is a workload, not
// the client). A ServiceAccount token must be for this issuer, valid now, of a ServiceAccount in
// the client's namespace that spec.authentication.serviceAccounts names; a federated token must be
// of an issuer the administrator configured, for this issuer, valid now, with an (issuer,
// subject) pair that spec.authentication.federated names. Every mismatch is the same
// invalid_client.
func (s *Server) authenticateServiceAccount(ctx context.Context, req *tokenRequest) (*m2mv1alpha1.M2MClient, *oauthError) {
	st := s.cfg.Keys.current()
	client, found := s.lookup(req.clientID, st)
	// The cluster's own ServiceAccount tokens always take the ServiceAccount path, which checks
	// the namespace, even if an administrator also listed the cluster's issuer as federated.
	iss := unverifiedIssuer(req.assertion)
	local := s.cfg.ServiceAccounts != nil && iss != "" && iss == s.cfg.ServiceAccounts.Issuer()
	if !local && iss != "" && iss == req.clientID {
		// (client_id may be omitted here: RFC 7523 §3 names the client by iss.)
		// RFC 7523 §3: the client signs its own assertion with a key pair (private_key_jwt).
		switch {
		case !found:
			s.decoyVerify(req.assertion)
			return nil, invalidClient("unknown_client")
		case s.verifyPrivateKeyJWT(ctx, client, st, req.assertion) != nil:
			return nil, invalidClient("assertion_invalid")
		case client.Spec.Disabled:
			return nil, invalidClient("disabled")
		}
		return client, nil
	}
	if req.clientIDFromAssertion {
		// Several clients may allow one workload: the request must say which.
		return nil, badRequest("client_id_missing", "client_id is required with a ServiceAccount or federated assertion")
	}
	if !local && s.cfg.Federation.Trusts(iss) {
		sub, err := s.cfg.Federation.Verify(ctx, iss, req.assertion, s.cfg.IssuerURL)
		switch {
		case err != nil:
			return nil, invalidClient("assertion_invalid")
		case strings.HasPrefix(sub, "system:serviceaccount:") && s.cfg.ServiceAccounts != nil && s.cfg.ServiceAccounts.Issuer() == "":
			// Until the cluster's own issuer is known, a ServiceAccount subject may be the
			// cluster's own, which must take the namespace-checked path.
			return nil, invalidClient("service_account_issuer_unknown")
		case !found:
			return nil, invalidClient("unknown_client")
		case !slices.Contains(client.Spec.Authentication.Federated, m2mv1alpha1.FederatedIdentity{Issuer: iss, Subject: sub}):
			return nil, invalidClient("identity_not_allowed")
		case client.Spec.Disabled:
			return nil, invalidClient("disabled")
		}
		return client, nil
	}
	if s.cfg.ServiceAccounts == nil {
		return nil, invalidClient("assertion_not_supported")
	}
	ns, name, err := s.cfg.ServiceAccounts.Verify(ctx, req.assertion, s.cfg.IssuerURL)
	switch {
	case err != nil:
		return nil, invalidClient("assertion_invalid")
	case !found:
		return nil, invalidClient("unknown_client")
	case ns != client.Namespace || !slices.Contains(client.Spec.Authentication.ServiceAccounts, name):
		return nil, invalidClient("service_account_not_allowed")
	case client.Spec.Disabled:
		return nil, invalidClient("disabled")
	}
	return client, nil
}

// grantScopes returns the requested scopes when the client may have all of them, or all of the
// client's scopes when none were requested.
func grantScopes(c *m2mv1alpha1.M2MClient, req *tokenRequest) ([]string, *oauthError) {
	if !req.scopeGiven {
		out := make([]string, 0, len(c.Spec.Scopes))
		for _, s := range c.Spec.Scopes {
			out = append(out, string(s))
		}
		return out, nil
	}
	for _, want := range req.scopes {
		if !slices.Contains(c.Spec.Scopes, m2mv1alpha1.Scope(want)) {
			return nil, invalidScope("scope_not_allowed", "the client may not request the scope "+want)
		}
	}
	return req.scopes, nil
}

// allowedAudiences are the audiences a client may have in its tokens: its spec.audiences, or the
// server's default audience when it names none.
func (s *Server) allowedAudiences(c *m2mv1alpha1.M2MClient) []string {
	if len(c.Spec.Audiences) == 0 {
		return []string{s.cfg.DefaultAudience}
	}
	out := make([]string, 0, len(c.Spec.Audiences))
	for _, a := range c.Spec.Audiences {
		out = append(out, string(a))
	}
	return out
}

// audience returns the token's audiences: the requested ones (audience and resource parameters),
// each of which the client must be allowed; else all that the client is allowed.
func (s *Server) audience(c *m2mv1alpha1.M2MClient, req *tokenRequest) ([]string, *oauthError) {
	for _, r := range req.resources {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
			return nil, invalidTarget("resource_syntax", "a resource must be an absolute URI without a fragment")
		}
	}
	allowed := s.allowedAudiences(c)
	requested := append(slices.Clone(req.audiences), req.resources...)
	if len(requested) == 0 {
		return allowed, nil
	}
	var out []string
	for _, a := range requested {
		if !slices.Contains(allowed, a) {
			return nil, invalidTarget("audience_not_allowed", "the client may not request the audience "+a)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// customClaims are the client's tokenClaims without any name that equals a reserved claim
// ignoring case. The API refuses those at admission; objects stored before that rule may still
// hold them, and decoders that match names ignoring case would read them as the real claims.
func customClaims(claims m2mv1alpha1.TokenClaims) m2mv1alpha1.TokenClaims {
	for name := range claims {
		if m2mv1alpha1.IsReservedClaim(name) {
			out := make(m2mv1alpha1.TokenClaims, len(claims))
			for n, v := range claims {
				if !m2mv1alpha1.IsReservedClaim(n) {
					out[n] = v
				}
			}
			return out
		}
	}
	return claims
}

// sign issues the RFC 9068 access token.
func (s *Server) sign(c *m2mv1alpha1.M2MClient, scopes, audience []string) (string, time.Duration, *oauthError) {
	st := s.cfg.Keys.current()
	if st == nil || st.active == nil {
		return "", 0, unavailable("no_signing_key", "no signing key is loaded yet")
	}
	ttl := time.Hour
	if c.Spec.TokenTTL != nil {
		ttl = c.Spec.TokenTTL.Duration
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti) // crypto/rand.Read never fails (Go 1.24+)
	now := s.cfg.Clock.Now().Truncate(time.Second)
	claims := accessClaims{
		Issuer:   s.cfg.IssuerURL,
		Subject:  c.Status.ClientID,
		ClientID: c.Status.ClientID,
		Scope:    strings.Join(scopes, " "),
		IssuedAt: now.Unix(),
		NotBef:   now.Unix(),
		Expires:  now.Add(ttl).Unix(),
		ID:       base64.RawURLEncoding.EncodeToString(jti),
	}
	if len(audience) == 1 {
		claims.Audience = audience[0]
	} else {
		claims.Audience = audience
	}
	if extra := customClaims(c.Spec.TokenClaims); len(extra) > 0 {
		raw, err := json.Marshal(extra)
		if err != nil {
			return "", 0, unavailable("claims_encoding", "the client's tokenClaims could not be encoded")
		}
		claims.extra = raw
	}

	payload, err := json.Marshal(claims)
	if err != nil {
		return "", 0, unavailable("claims_encoding", "the token could not be encoded")
	}
	// The header is the same for every token of a key, so it is encoded once per key set.
	signingInput := st.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := st.active.Method().Sign(signingInput, st.active.SigningKey())
	if err != nil {
		return "", 0, unavailable("signing_failed", "the token could not be signed")
	}
	signed := signingInput + "." + base64.RawURLEncoding.EncodeToString(sig)
	return signed, ttl, nil
}

// jwks serves the public keys with an ETag, so that verifiers revalidate cheaply.
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	st := s.cfg.Keys.current()
	if st == nil {
		http.Error(w, "no signing keys are loaded yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(JWKSMaxAge/time.Second)))
	w.Header().Set("ETag", st.etag)
	if r.Header.Get("If-None-Match") == st.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(st.jwks)
}

// Metadata is the authorization server metadata (RFC 8414 §2).
type Metadata struct {
	Issuer                               string   `json:"issuer"`
	TokenEndpoint                        string   `json:"token_endpoint"`
	JWKSURI                              string   `json:"jwks_uri"`
	IntrospectionEndpoint                string   `json:"introspection_endpoint"`
	GrantTypesSupported                  []string `json:"grant_types_supported"`
	ResponseTypesSupported               []string `json:"response_types_supported"`
	TokenEndpointAuthMethodsSupported    []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs         []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethods     []string `json:"introspection_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthSigningAlgs []string `json:"introspection_endpoint_auth_signing_alg_values_supported"`
	AccessTokenSigningAlgValuesSupported []string `json:"access_token_signing_alg_values_supported,omitempty"`
	IDTokenSigningAlgValuesSupported     []string `json:"id_token_signing_alg_values_supported,omitempty"`
	SubjectTypesSupported                []string `json:"subject_types_supported,omitempty"`
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	algs := []string{}
	if st := s.cfg.Keys.current(); st != nil {
		for _, k := range st.set.Keys {
			if st.published[k.KID] && !slices.Contains(algs, string(k.Algorithm)) {
				algs = append(algs, string(k.Algorithm))
			}
		}
	}
	authMethods := []string{"client_secret_basic", "client_secret_post", "private_key_jwt"}
	assertionAlgs := []string{"ES256", "RS256", "EdDSA"}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, Metadata{
		Issuer:                               s.cfg.IssuerURL,
		TokenEndpoint:                        issuer.TokenURL(s.cfg.IssuerURL),
		JWKSURI:                              s.cfg.IssuerURL + "/.well-known/jwks.json",
		IntrospectionEndpoint:                s.cfg.IssuerURL + "/oauth2/introspect",
		GrantTypesSupported:                  []string{GrantClientCredentials},
		ResponseTypesSupported:               []string{},
		TokenEndpointAuthMethodsSupported:    authMethods,
		TokenEndpointAuthSigningAlgs:         assertionAlgs,
		IntrospectionEndpointAuthMethods:     authMethods,
		IntrospectionEndpointAuthSigningAlgs: assertionAlgs,
		AccessTokenSigningAlgValuesSupported: algs,
		// OpenID discovery clients read the algorithms from here; this server issues no ID
		// tokens, but its access tokens are signed with these.
		IDTokenSigningAlgValuesSupported: algs,
		SubjectTypesSupported:            []string{"public"},
	})
}

// introspect answers RFC 7662 requests from any authenticated M2MClient.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	req, caller, ok := s.authenticated(w, r)
	if !ok {
		return
	}
	if req.token == "" {
		s.fail(w, badRequest("no_token", "the token parameter is required"), caller)
		return
	}
	noStore(w)
	claims, ok := s.verify(req.token)
	if !ok {
		writeJSON(w, http.StatusOK, map[string]bool{"active": false})
		return
	}
	id, _ := claims["client_id"].(string)
	client, found := s.lookup(id, s.cfg.Keys.current())
	if !found || client.Spec.Disabled {
		writeJSON(w, http.StatusOK, map[string]bool{"active": false})
		return
	}
	out := map[string]any{"active": true, "token_type": "Bearer"}
	for _, k := range []string{"scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti"} {
		if v, ok := claims[k]; ok {
			out[k] = v
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// verify checks a token this server issued: a known key of the token's algorithm, typ at+jwt,
// this issuer, and the time claims.
func (s *Server) verify(raw string) (jwt.MapClaims, bool) {
	st := s.cfg.Keys.current()
	if st == nil {
		return nil, false
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{string(signingkeys.ES256), string(signingkeys.RS256), string(signingkeys.EdDSA)}),
		jwt.WithIssuer(s.cfg.IssuerURL),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.cfg.Clock.Now),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, "at+jwt") {
			return nil, jwt.ErrTokenUnverifiable
		}
		kid, _ := t.Header["kid"].(string)
		k := st.set.Find(kid)
		if k == nil || t.Method.Alg() != string(k.Algorithm) {
			return nil, jwt.ErrTokenUnverifiable
		}
		return k.Signer().Public(), nil
	})
	return claims, err == nil
}

// decoyPublicKeys are made once per process: an RSA key takes a while to generate, and public
// keys whose private halves are thrown away serve every server alike.
var decoyPublicKeys = sync.OnceValues(func() (map[string]crypto.PublicKey, error) {
	keys := map[string]crypto.PublicKey{}
	for _, alg := range []signingkeys.Algorithm{signingkeys.ES256, signingkeys.RS256, signingkeys.EdDSA} {
		signer, err := signingkeys.NewSigner(alg)
		if err != nil {
			return nil, err
		}
		keys[string(alg)] = signer.Public()
	}
	return keys, nil
})
