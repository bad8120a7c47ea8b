// Package tokenserver is the OAuth 2.0 authorization server for M2MClients: the client
// credentials grant (RFC 6749 §4.4) issuing RFC 9068 JWT access tokens, the JWKS, authorization
// server metadata (RFC 8414) and token introspection (RFC 7662).
package tokenserver

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// GrantClientCredentials is the only grant type served.
const GrantClientCredentials = "client_credentials"

// JWKSMaxAge is how long verifiers may cache the JWKS. Keys are published longer than this
// before they sign (signingkeys.Policy.Validate), so a cached JWKS never lacks a key that signs.
const JWKSMaxAge = signingkeys.JWKSMaxAge

// Config is what a Server needs.
type Config struct {
	// IssuerURL is the issuer: every token's "iss", and the base of the URLs the metadata
	// advertises to requests that come through any door but the in-cluster one.
	IssuerURL string
	// InClusterURL is where pods reach the server (its Service) when that is not the issuer,
	// as with a public door under the issuer's name: the metadata fetched there advertises
	// endpoints under it, so that in-cluster callers never hairpin through the public door. Empty
	// means IssuerURL.
	InClusterURL string
	// PreviousIssuerURL, during a move to another issuer, is the issuer whose name
	// ServiceAccount, federated and private_key_jwt assertions may still carry as their audience,
	// and whose tokens introspection still recognises; empty after the move.
	PreviousIssuerURL string
	// DefaultAudience is the audience of tokens for clients with no spec.audiences. Empty means
	// IssuerURL: every token carries an "aud" (RFC 9068 §2.2), and for a client that names no
	// audience it is "a client of this installation", as Stytch's project audience is.
	DefaultAudience string
	Clients         ClientSource
	Keys            KeySource
	// Revocations is the content of the revocation list (RevocationsPath); nil publishes an
	// empty list.
	Revocations RevocationSource
	Clock       clock.PassiveClock
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
	// UndecodableClients reports how many clients are left out of the cache because they do not
	// decode, for the metrics; optional.
	UndecodableClients func() int
	// ServiceAccounts verifies ServiceAccount tokens presented as client assertions; nil refuses
	// them.
	ServiceAccounts ServiceAccountTokens
	// Federation verifies tokens of the federated issuers; nil trusts none.
	Federation *Federation
	// ReplayBudget is the number of one-time assertion IDs the replay cache holds before
	// namespaces share it (replayCache); zero derives it from the Go memory limit (ReplayBudget).
	ReplayBudget int
	// KeyLoadErrors reports how many signing-key Secret versions did not load; optional.
	KeyLoadErrors func() int64
	// Log receives a line per refused request at V(1); the zero value logs nothing.
	Log logr.Logger
	// Access decides who may read a client's refusals (RefusalsPath); nil serves them to no one.
	Access AccessReviewer
	// ClientAddresses finds the client's address of a request (behind trusted proxies).
	ClientAddresses ClientAddresses
	// FailureLimit limits failed authentications by source; the zero value limits nothing.
	FailureLimit FailureLimit
	// IssuanceLimit limits the token requests of each authenticated client; the zero value
	// limits nothing.
	IssuanceLimit IssuanceLimit
	// DPoPNonces makes the token endpoint require its server nonce (RFC 9449 §8) in DPoP proofs,
	// which bounds the replay of a proof at another replica, which does not share the replay
	// cache, to the nonce's window instead of the proof's lifetime.
	DPoPNonces bool
	// RevocationWaiters is the most requests for the revocation list that wait for a change at
	// once (long-polls); past it, a request is answered at once. 0 means
	// DefaultRevocationWaiters.
	RevocationWaiters int
	// ClientCertificates says that the listener verifies client certificates against the
	// pod-client CA (--client-ca-file): tls_client_auth is offered, and its tokens are bound to
	// the certificate (RFC 8705).
	ClientCertificates bool
	// Replica names this process in the answers of RefusalsPath: each replica remembers the
	// refusals it answered.
	Replica string

	// exhausted reports whether an authenticated client is over its issuance limit, for the
	// authenticators; New sets it.
	exhausted func(*CachedClient) bool
}

// Server serves the OAuth endpoints.
type Server struct {
	cfg     Config
	prefix  string
	metrics *metrics
	// authenticators are the ways a client authenticates, in the order of authenticatorOrder.
	authenticators []authenticator
	// refusals are the latest refusals of each client, for its owner.
	refusals *refusalMemory
	access   *refusalAccess
	// sources limits failed authentications by source; nil limits nothing.
	sources *sourceLimiter
	// issuance limits the token requests of each client; nil limits nothing.
	issuance *issuanceLimiter
	// dpopURLs are the htu values a token request's DPoP proof may name.
	dpopURLs []string
	// dpopReplays holds the (key thumbprint, jti) of accepted DPoP proofs.
	dpopReplays replayCache
	// revocationList builds and signs the revocation list.
	revocationList *revocationPublisher
	// revocationWaiting counts the long-polls held now.
	revocationWaiting atomic.Int64
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
	if cfg.InClusterURL, err = optionalURL(cfg.InClusterURL, iss, "the in-cluster URL"); err != nil {
		return nil, err
	}
	if cfg.PreviousIssuerURL, err = optionalURL(cfg.PreviousIssuerURL, "", "the previous issuer URL"); err != nil {
		return nil, err
	}
	if cfg.PreviousIssuerURL == iss {
		// Never useful, and likely the new issuer where the old one was meant: started anyway, it
		// would refuse every assertion that still names the old issuer, the outage the flag is
		// there to prevent. Refused, the new replica does not start and a rolling update keeps
		// the old ones serving.
		return nil, fmt.Errorf("the previous issuer URL %s is the issuer itself: during a move it names the issuer before it, and after the move it is left empty", iss)
	}
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
	s := &Server{cfg: cfg, prefix: strings.TrimSuffix(u.Path, "/"), dpopURLs: dpopTokenURLs(cfg), dpopReplays: replayCache{budget: cfg.ReplayBudget}}
	// Before the authenticators, which ask it whether a client is over its limit.
	s.issuance = newIssuanceLimiter(cfg.IssuanceLimit, cfg.Clock, cfg.Clients)
	cfg.exhausted = s.issuance.exhausted
	if s.authenticators, err = newAuthenticators(cfg); err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(cfg); err != nil {
		return nil, err
	}
	s.refusals = newRefusalMemory(cfg.Clock, cfg.Clients)
	var source RevocationSource = emptySource{}
	if cfg.Revocations != nil {
		source = cfg.Revocations
	}
	s.revocationList = &revocationPublisher{s: s, source: source}
	s.access = newRefusalAccess(cfg.Access, cfg.Clock)
	if s.sources = newSourceLimiter(cfg.FailureLimit, cfg.Clock); s.sources != nil {
		if err := s.sources.registerSourcesGauge(cfg.Registry); err != nil {
			return nil, err
		}
	}
	if s.issuance != nil {
		if err := s.issuance.registerClientsGauge(cfg.Registry); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// optionalURL parses an issuer-like URL that may be empty, which gives fallback.
func optionalURL(raw, fallback, what string) (string, error) {
	if raw == "" {
		return fallback, nil
	}
	u, err := issuer.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return u, nil
}

// assertionAudiences are the audiences a client assertion may name: this issuer and, during a
// move, the previous one (RFC 7523 §3: the authorization server's identifier).
func (cfg Config) assertionAudiences() []string {
	if cfg.PreviousIssuerURL == "" {
		return []string{cfg.IssuerURL}
	}
	return []string{cfg.IssuerURL, cfg.PreviousIssuerURL}
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

// introspectPath is the path of the introspection endpoint below the issuer.
const introspectPath = "/oauth2/introspect"

// Handler routes the server's endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(s.prefix+issuer.TokenPath, s.metrics.timed("token", s.token))
	mux.Handle(s.prefix+introspectPath, s.metrics.timed("introspect", s.introspect))
	mux.Handle(s.prefix+"/.well-known/jwks.json", s.metrics.timed("jwks", s.jwks))
	mux.HandleFunc(s.prefix+RefusalsPath, s.refusalsOfClient)
	// Not timed: a long-poll lasts as long as it waits, which would swamp the latency histogram.
	mux.HandleFunc(s.prefix+RevocationsPath, s.revocations)
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
