package tokenserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// ServiceAccountTokens verifies Kubernetes ServiceAccount tokens presented as client assertions.
type ServiceAccountTokens interface {
	// Verify checks that token is a ServiceAccount token of the cluster, for one of audiences, valid now,
	// and returns the ServiceAccount's namespace and name.
	Verify(ctx context.Context, token string, audiences []string) (namespace, name string, err error)
	// Issuer is the cluster's ServiceAccount issuer, or "" while it is not known.
	Issuer() string
}

// errAssertion is every reason an assertion is refused; the client only ever sees
// invalid_client.
var errAssertion = errors.New("not a valid client assertion")

const (
	// keysRefresh is how often an issuer's signing keys are read again.
	keysRefresh = 10 * time.Minute
	// unknownKidRefresh is the least time between two reads caused by tokens with unknown kids.
	unknownKidRefresh = 30 * time.Second
	// assertionLeeway tolerates clock differences between an issuer and the token server.
	assertionLeeway = 30 * time.Second
	// MaxAssertionLifetime bounds exp - iat of an assertion. The token server verifies
	// assertions offline and cannot see a ServiceAccount deleted after its token was issued, so
	// a token minted for years (the TokenRequest API allows it unless the cluster caps it) must
	// not work for years.
	MaxAssertionLifetime = 24 * time.Hour
)

// issuerKeys caches the signing keys of one issuer of assertions, read by fetch. A failed read
// keeps the keys read before, so that verification goes on while the issuer is away.
type issuerKeys struct {
	name  string
	fetch func(ctx context.Context) (issuer string, set jwk.Set, err error)
	clock clock.PassiveClock

	mu          sync.RWMutex
	issuer      string
	keys        map[string]assertionKey
	lastAttempt time.Time
	loading     sync.Mutex

	// cache holds the assertions verified with these keys (assertioncache.go); partition names
	// the share of it an assertion with subject sub takes, false for an assertion not worth
	// keeping.
	cache     *assertionCache
	partition func(sub string) (string, bool)
	// signatureChecks counts full verifications, which tests and benchmarks read to tell a
	// cached answer from a verified one.
	signatureChecks atomic.Int64
}

type assertionKey struct {
	key any
	alg string
}

func newIssuerKeys(name string, clk clock.PassiveClock, fetch func(context.Context) (string, jwk.Set, error)) *issuerKeys {
	return &issuerKeys{name: name, fetch: fetch, clock: clk, keys: map[string]assertionKey{},
		cache: newAssertionCache(assertionCachePerPartition, assertionCacheEntries), partition: federatedPartition}
}

// federatedPartition shares the cache of a federated issuer by subject: what its tokens name.
func federatedPartition(sub string) (string, bool) { return sub, sub != "" }

// run loads the keys, then refreshes them every keysRefresh until ctx ends.
func (k *issuerKeys) run(ctx context.Context) {
	for {
		if err := k.load(ctx); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Info("reading assertion signing keys; keeping the ones read before", "issuer", k.name, "error", err.Error())
		}
		t := time.NewTimer(keysRefresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (k *issuerKeys) load(ctx context.Context) error {
	// One read at a time: concurrent unknown kids wait for it rather than start their own.
	k.loading.Lock()
	defer k.loading.Unlock()
	k.mu.Lock()
	k.lastAttempt = k.clock.Now()
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	iss, set, err := k.fetch(ctx)
	if err != nil {
		return err
	}
	keys := map[string]assertionKey{}
	for _, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		pub, err := j.PublicKey()
		if err != nil || j.KeyID == "" {
			continue
		}
		keys[j.KeyID] = assertionKey{key: pub, alg: j.Algorithm}
	}
	if len(keys) == 0 || iss == "" {
		return fmt.Errorf("%s: no issuer or no usable key", k.name)
	}
	k.mu.Lock()
	k.issuer, k.keys = iss, keys
	k.mu.Unlock()
	return nil
}

func (k *issuerKeys) key(ctx context.Context, kid string) (assertionKey, string, bool) {
	k.mu.RLock()
	key, ok := k.keys[kid]
	iss, last := k.issuer, k.lastAttempt
	k.mu.RUnlock()
	if ok || k.clock.Since(last) < unknownKidRefresh {
		return key, iss, ok
	}
	// A key the issuer started signing with since the last read. The read runs to completion
	// even if this request goes away, so that a dropped request cannot use up the rate limit
	// without a read.
	_ = k.load(context.WithoutCancel(ctx))
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok = k.keys[kid]
	return key, k.issuer, ok
}

// verify checks token's signature against the issuer's keys, its issuer, audience and times,
// and returns its subject. An assertion verified before is answered from the cache while a full
// verification would accept it too (verifiedAssertion.acceptedAgain), without the signature
// check.
func (k *issuerKeys) verify(ctx context.Context, token string, audiences []string) (string, error) {
	h := hashAssertion(token)
	if v, ok := k.cache.get(h); ok {
		k.mu.RLock()
		again := v.acceptedAgain(k.clock.Now(), audiences, k.issuer, k.keys)
		k.mu.RUnlock()
		if again {
			return v.sub, nil
		}
	}
	v, err := k.verifyFully(ctx, token, audiences)
	if err != nil {
		k.cache.forget(h)
		return "", err
	}
	if partition, ok := k.partition(v.sub); ok && len(token) <= maxCachedAssertion {
		// Of aud, only what these audiences matched: what a caller puts in aud must not decide
		// what an entry weighs. A later request asking other audiences may then miss a match
		// that aud has, and verifies in full: never an answer the full verification would not
		// give.
		v.aud = matchedAudiences(v.aud, audiences)
		k.cache.put(h, partition, v, k.clock.Now())
	}
	return v.sub, nil
}

// matchedAudiences are the values of aud among audiences, or none when audiences asks for none.
func matchedAudiences(aud, audiences []string) []string {
	var out []string
	for _, a := range aud {
		if slices.Contains(audiences, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// verifyFully is verify without the cache.
func (k *issuerKeys) verifyFully(ctx context.Context, token string, audiences []string) (verifiedAssertion, error) {
	k.signatureChecks.Add(1)
	var v verifiedAssertion
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256", "ES256"}),
		jwt.WithAudience(audiences...),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(assertionLeeway),
		jwt.WithTimeFunc(k.clock.Now),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, issuer, ok := k.key(ctx, kid)
		if !ok {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		if key.alg != "" && key.alg != t.Method.Alg() {
			return nil, fmt.Errorf("the token says %s, its key is %s", t.Method.Alg(), key.alg)
		}
		v.iss, v.kid, v.key = issuer, kid, key
		return key.key, nil
	})
	if err != nil {
		return verifiedAssertion{}, fmt.Errorf("%w: %v", errAssertion, err)
	}
	if got, _ := claims.GetIssuer(); got != v.iss || v.iss == "" {
		return verifiedAssertion{}, fmt.Errorf("%w: issuer %q", errAssertion, got)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if iat == nil || exp.Sub(iat.Time) > MaxAssertionLifetime {
		return verifiedAssertion{}, fmt.Errorf("%w: no iat, or a lifetime over %s", errAssertion, MaxAssertionLifetime)
	}
	// The parser has read these without error, so they read again the same.
	v.exp = exp.Time
	if nbf, _ := claims.GetNotBefore(); nbf != nil {
		v.nbf, v.hasNbf = nbf.Time, true
	}
	v.aud, _ = claims.GetAudience()
	v.sub, _ = claims.GetSubject()
	return v, nil
}

// ClusterServiceAccounts verifies ServiceAccount tokens against the keys the API server publishes
// for service-account issuer discovery (/.well-known/openid-configuration and /openid/v1/jwks,
// which the ClusterRole system:service-account-issuer-discovery grants).
type ClusterServiceAccounts struct{ keys *issuerKeys }

// NewClusterServiceAccounts reads discovery through clientset's connection to the API server.
func NewClusterServiceAccounts(clientset kubernetes.Interface, clk clock.PassiveClock) *ClusterServiceAccounts {
	rc := clientset.CoreV1().RESTClient()
	return newClusterServiceAccounts(clk, func(ctx context.Context) (string, jwk.Set, error) {
		return discoverThroughAPIServer(ctx, rc)
	})
}

func newClusterServiceAccounts(clk clock.PassiveClock, fetch func(context.Context) (string, jwk.Set, error)) *ClusterServiceAccounts {
	keys := newIssuerKeys("the cluster's ServiceAccount issuer", clk, fetch)
	// A tenant can have tokens made for the ServiceAccounts of its own namespaces only.
	keys.partition = func(sub string) (string, bool) {
		ns, _, ok := serviceAccountOf(sub)
		return ns, ok
	}
	return &ClusterServiceAccounts{keys: keys}
}

func discoverThroughAPIServer(ctx context.Context, rc rest.Interface) (string, jwk.Set, error) {
	raw, err := rc.Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return "", jwk.Set{}, fmt.Errorf("service-account issuer discovery: %w", err)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return "", jwk.Set{}, fmt.Errorf("service-account issuer discovery: %w", err)
	}
	raw, err = rc.Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		return "", jwk.Set{}, fmt.Errorf("service-account JWKS: %w", err)
	}
	var set jwk.Set
	if err := json.Unmarshal(raw, &set); err != nil {
		return "", jwk.Set{}, fmt.Errorf("service-account JWKS: %w", err)
	}
	return doc.Issuer, set, nil
}

// Run reads the keys, then again every 10 minutes, until ctx ends.
func (s *ClusterServiceAccounts) Run(ctx context.Context) { s.keys.run(ctx) }

// Issuer is the cluster's ServiceAccount issuer, once discovered.
func (s *ClusterServiceAccounts) Issuer() string {
	s.keys.mu.RLock()
	defer s.keys.mu.RUnlock()
	return s.keys.issuer
}

// Verify implements ServiceAccountTokens.
func (s *ClusterServiceAccounts) Verify(ctx context.Context, token string, audiences []string) (string, string, error) {
	sub, err := s.keys.verify(ctx, token, audiences)
	if err != nil {
		return "", "", err
	}
	ns, name, ok := serviceAccountOf(sub)
	if !ok {
		return "", "", fmt.Errorf("%w: subject %q is not a ServiceAccount", errAssertion, sub)
	}
	return ns, name, nil
}

// serviceAccountOf reads the namespace and name of a ServiceAccount token's subject.
func serviceAccountOf(sub string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(sub, "system:serviceaccount:")
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return ns, name, true
}

// unverifiedIssuer reads the iss claim of a JWT without verifying anything, to choose the keys to
// verify it with.
func unverifiedIssuer(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return ""
	}
	return c.Iss
}
