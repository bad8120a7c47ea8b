package tokenserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	// Verify checks that token is a ServiceAccount token of the cluster, for audience, valid now,
	// and returns the ServiceAccount's namespace and name.
	Verify(ctx context.Context, token, audience string) (namespace, name string, err error)
}

// errServiceAccountToken is every reason a ServiceAccount token is refused; the client only ever
// sees invalid_client.
var errServiceAccountToken = errors.New("not a valid ServiceAccount token")

const (
	// saKeysRefresh is how often the cluster's ServiceAccount signing keys are read again.
	saKeysRefresh = 10 * time.Minute
	// saUnknownKidRefresh is the least time between two reads caused by tokens with unknown kids.
	saUnknownKidRefresh = 30 * time.Second
	// saLeeway tolerates clock differences between the API server and the token server.
	saLeeway = 30 * time.Second
)

// ClusterServiceAccounts verifies ServiceAccount tokens against the keys the API server publishes
// for service-account issuer discovery (/.well-known/openid-configuration and /openid/v1/jwks,
// which the ClusterRole system:service-account-issuer-discovery grants). The keys are cached, so
// that verification goes on while the API server is away.
type ClusterServiceAccounts struct {
	rest  rest.Interface
	clock clock.PassiveClock

	mu          sync.RWMutex
	issuer      string
	keys        map[string]saKey
	lastAttempt time.Time
}

type saKey struct {
	key any
	alg string
}

// NewClusterServiceAccounts reads discovery through clientset's connection to the API server.
func NewClusterServiceAccounts(clientset kubernetes.Interface, clk clock.PassiveClock) *ClusterServiceAccounts {
	return &ClusterServiceAccounts{rest: clientset.CoreV1().RESTClient(), clock: clk, keys: map[string]saKey{}}
}

// Run loads the keys, then refreshes them every saKeysRefresh until ctx ends. A failure keeps
// the keys loaded before.
func (s *ClusterServiceAccounts) Run(ctx context.Context) {
	for {
		if err := s.load(ctx); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Info("reading the cluster's ServiceAccount issuer keys; keeping the ones loaded before", "error", err.Error())
		}
		t := time.NewTimer(saKeysRefresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *ClusterServiceAccounts) load(ctx context.Context) error {
	s.mu.Lock()
	s.lastAttempt = s.clock.Now()
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := s.rest.Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("service-account issuer discovery: %w", err)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Issuer == "" {
		return fmt.Errorf("service-account issuer discovery: no issuer in the document")
	}
	raw, err = s.rest.Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("service-account JWKS: %w", err)
	}
	var set jwk.Set
	if err := json.Unmarshal(raw, &set); err != nil {
		return fmt.Errorf("service-account JWKS: %w", err)
	}
	keys := map[string]saKey{}
	for _, k := range set.Keys {
		pub, err := k.PublicKey()
		if err != nil || k.KeyID == "" {
			continue
		}
		keys[k.KeyID] = saKey{key: pub, alg: k.Algorithm}
	}
	if len(keys) == 0 {
		return errors.New("service-account JWKS: no usable key")
	}
	s.mu.Lock()
	s.issuer, s.keys = doc.Issuer, keys
	s.mu.Unlock()
	return nil
}

func (s *ClusterServiceAccounts) key(ctx context.Context, kid string) (saKey, string, bool) {
	s.mu.RLock()
	k, ok := s.keys[kid]
	iss, last := s.issuer, s.lastAttempt
	s.mu.RUnlock()
	if ok || s.clock.Since(last) < saUnknownKidRefresh {
		return k, iss, ok
	}
	// A key the API server started signing with since the last read.
	_ = s.load(ctx)
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok = s.keys[kid]
	return k, s.issuer, ok
}

// Verify implements ServiceAccountTokens.
func (s *ClusterServiceAccounts) Verify(ctx context.Context, token, audience string) (string, string, error) {
	var iss string
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256", "ES256"}),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(saLeeway),
		jwt.WithTimeFunc(s.clock.Now),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, issuer, ok := s.key(ctx, kid)
		if !ok {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		if k.alg != "" && k.alg != t.Method.Alg() {
			return nil, fmt.Errorf("the token says %s, its key is %s", t.Method.Alg(), k.alg)
		}
		iss = issuer
		return k.key, nil
	})
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", errServiceAccountToken, err)
	}
	if got, _ := claims.GetIssuer(); got != iss || iss == "" {
		return "", "", fmt.Errorf("%w: issuer %q", errServiceAccountToken, got)
	}
	sub, _ := claims.GetSubject()
	rest, ok := strings.CutPrefix(sub, "system:serviceaccount:")
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", "", fmt.Errorf("%w: subject %q is not a ServiceAccount", errServiceAccountToken, sub)
	}
	return ns, name, nil
}
