// Package tokenserver is the OAuth 2.0 authorization server for M2MClients: the client
// credentials grant (RFC 6749 §4.4) issuing RFC 9068 JWT access tokens, the JWKS, authorization
// server metadata (RFC 8414) and token introspection (RFC 7662).
package tokenserver

import (
	"context"
	"crypto"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

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
