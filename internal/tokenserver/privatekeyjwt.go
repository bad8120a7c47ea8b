package tokenserver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// MaxPrivateKeyJWTLifetime bounds exp - iat of a private_key_jwt assertion, so that a captured
// assertion is useless soon and the replay cache stays small.
const MaxPrivateKeyJWTLifetime = 5 * time.Minute

// maxReplayEntries bounds the replay cache; a full cache refuses new jtis rather than forget
// unexpired ones.
const maxReplayEntries = 1 << 20

// replayCache remembers the jti of every assertion accepted, until it expires. It is per
// replica: with several token-server replicas, an assertion can be replayed once at each other
// replica within its (at most 5 minute) lifetime.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // client ID + jti -> expiry
}

// first records key until exp and reports whether it was new.
func (c *replayCache) first(key string, exp, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if until, ok := c.seen[key]; ok && now.Before(until) {
		return false
	}
	if len(c.seen) >= maxReplayEntries {
		for k, until := range c.seen {
			if !now.Before(until) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= maxReplayEntries {
			return false
		}
	}
	c.seen[key] = exp
	return true
}

// clientKeys returns the usable public keys of the client by kid; a key that does not parse
// (or is too weak) is left out and never verifies.
func clientKeys(c *m2mv1alpha1.M2MClient) map[string]assertionKey {
	out := map[string]assertionKey{}
	for _, k := range c.Spec.Authentication.PublicKeys {
		j := jwk.Key{KeyID: k.KeyID, KeyType: k.KeyType, Algorithm: k.Algorithm, Curve: k.Curve, X: k.X, Y: k.Y, N: k.N, E: k.E}
		if pub, err := j.PublicKey(); err == nil {
			out[k.KeyID] = assertionKey{key: pub, alg: k.Algorithm}
		}
	}
	return out
}

// verifyPrivateKeyJWT checks an RFC 7523 §3 client assertion of client, as the current revision
// (draft-ietf-oauth-rfc7523bis) asks: signed by one of the client's keys with that key's
// algorithm; iss and sub equal to the client ID; aud equal to this issuer identifier alone (not
// the token endpoint URL, which let one assertion pass at several endpoints); exp, iat and jti
// present, exp at most 5 minutes after iat; and a jti not accepted before within its lifetime.
func (s *Server) verifyPrivateKeyJWT(_ context.Context, client *m2mv1alpha1.M2MClient, assertion string) error {
	keys := clientKeys(client)
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"ES256", "RS256", "EdDSA"}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(assertionLeeway),
		jwt.WithTimeFunc(s.cfg.Clock.Now),
		jwt.WithIssuer(client.Status.ClientID),
		jwt.WithSubject(client.Status.ClientID),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := keys[kid]
		if !ok {
			return nil, fmt.Errorf("the client has no key %q", kid)
		}
		if k.alg != t.Method.Alg() {
			return nil, fmt.Errorf("the token says %s, the key is %s", t.Method.Alg(), k.alg)
		}
		return k.key, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errAssertion, err)
	}
	aud, _ := claims.GetAudience()
	if len(aud) != 1 || aud[0] != s.cfg.IssuerURL {
		return fmt.Errorf("%w: aud %q is not the issuer alone", errAssertion, aud)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if iat == nil || exp.Sub(iat.Time) > MaxPrivateKeyJWTLifetime {
		return fmt.Errorf("%w: no iat, or a lifetime over %s", errAssertion, MaxPrivateKeyJWTLifetime)
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		return fmt.Errorf("%w: no jti", errAssertion)
	}
	if !s.replays.first(client.Status.ClientID+"\x00"+jti, exp.Add(assertionLeeway), s.cfg.Clock.Now()) {
		return fmt.Errorf("%w: jti replayed", errAssertion)
	}
	return nil
}
