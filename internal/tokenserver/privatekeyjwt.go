package tokenserver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// MaxPrivateKeyJWTLifetime bounds exp - iat of a private_key_jwt assertion, so that a captured
// assertion is useless soon and the replay cache stays small.
const MaxPrivateKeyJWTLifetime = 5 * time.Minute

// Bounds of the replay cache. A full cache, or a client's full share of it, refuses new jtis
// rather than forget unexpired ones; a jti longer than maxJTILength is refused outright.
const (
	maxReplayEntries   = 1 << 20
	maxReplayPerClient = 10000
	maxJTILength       = 256
	replaySweepEvery   = 30 * time.Second
)

// replayCache remembers the jti of every assertion accepted, until it expires. It is per
// replica: with several token-server replicas, an assertion can be replayed once at each other
// replica within its (at most 5 minute) lifetime. Entries are fixed-size hashes, expired ones are
// swept every 30 s, and each client may hold at most maxReplayPerClient of them, so that one
// tenant's key cannot fill the server's memory or lock other clients out.
type replayCache struct {
	mu        sync.Mutex
	seen      map[[sha256.Size]byte]replayEntry
	perClient map[string]int
	lastSweep time.Time
}

type replayEntry struct {
	client string
	until  time.Time
}

// first records (client, jti) until exp and reports whether it was new and could be recorded.
func (c *replayCache) first(client, jti string, exp, now time.Time) bool {
	if len(jti) > maxJTILength {
		return false
	}
	key := sha256.Sum256([]byte(client + "\x00" + jti))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen, c.perClient = map[[sha256.Size]byte]replayEntry{}, map[string]int{}
	}
	if now.Sub(c.lastSweep) >= replaySweepEvery {
		for k, e := range c.seen {
			if !now.Before(e.until) {
				delete(c.seen, k)
				if c.perClient[e.client]--; c.perClient[e.client] <= 0 {
					delete(c.perClient, e.client)
				}
			}
		}
		c.lastSweep = now
	}
	if e, ok := c.seen[key]; ok && now.Before(e.until) {
		return false
	}
	if c.perClient[client] >= maxReplayPerClient || len(c.seen) >= maxReplayEntries {
		return false
	}
	c.seen[key] = replayEntry{client: client, until: exp}
	c.perClient[client]++
	return true
}

// clientKeys returns the usable public keys of the client by kid: those of its spec, and those
// of the key pairs the manager generated that status accepts now, authenticated by their MAC (a
// generated key no longer asked for only in its grace period). A key that does not parse (or is
// too weak) is left out and never verifies.
func clientKeys(c *m2mv1alpha1.M2MClient, st *keyState, now time.Time) map[string]assertionKey {
	out := map[string]assertionKey{}
	add := func(k *m2mv1alpha1.ClientPublicKey) {
		if pub, err := credentials.JWK(k).PublicKey(); err == nil {
			out[k.KeyID] = assertionKey{key: pub, alg: k.Algorithm}
		}
	}
	for i := range c.Spec.Authentication.PublicKeys {
		add(&c.Spec.Authentication.PublicKeys[i])
	}
	current := credentials.AcceptsCurrent(c, credentials.FormKey)
	for i := range c.Status.AcceptedSecrets {
		e := &c.Status.AcceptedSecrets[i]
		// A key's entry needs its MAC even before enforcement: no version without MACs wrote one.
		if credentials.FormOf(e) == credentials.FormKey && credentials.Accepted(*e, now) && (current || e.ExpiresAt != nil) && st.status.VerifyEntry(c, e) {
			add(e.PublicKey)
		}
	}
	return out
}

// verifyPrivateKeyJWT checks an RFC 7523 §3 client assertion of client, as the current revision
// (draft-ietf-oauth-rfc7523bis) asks: signed by one of the client's keys with that key's
// algorithm; iss and sub equal to the client ID; aud equal to this issuer identifier alone (not
// the token endpoint URL, which let one assertion pass at several endpoints); exp, iat and jti
// present, exp at most 5 minutes after iat; and a jti not accepted before within its lifetime.
func (s *Server) verifyPrivateKeyJWT(_ context.Context, client *m2mv1alpha1.M2MClient, st *keyState, assertion string) error {
	keys := clientKeys(client, st, s.cfg.Clock.Now())
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
	var mismatch error
	_, err := parser.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := keys[kid]
		switch {
		case !ok:
			mismatch = fmt.Errorf("the client has no key %q", kid)
		case k.alg != t.Method.Alg():
			mismatch = fmt.Errorf("the token says %s, the key is %s", t.Method.Alg(), k.alg)
		default:
			return k.key, nil
		}
		// A signature check against a decoy all the same, so that an unknown kid costs what
		// a wrong signature does.
		return s.decoyKeys[t.Method.Alg()], nil
	})
	if err = errors.Join(mismatch, err); err != nil {
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
	if !s.replays.first(client.Status.ClientID, jti, exp.Add(assertionLeeway), s.cfg.Clock.Now()) {
		return fmt.Errorf("%w: jti replayed, too long, or over the client's share of the replay cache", errAssertion)
	}
	return nil
}

// decoyVerify does the signature work of an assertion check for an unknown client, with a decoy
// key of the assertion's algorithm, so that the answer's timing does not tell whether a client ID
// exists.
func (s *Server) decoyVerify(assertion string) {
	_, _ = jwt.NewParser(jwt.WithValidMethods([]string{"ES256", "RS256", "EdDSA"})).Parse(assertion, func(t *jwt.Token) (any, error) {
		return s.decoyKeys[t.Method.Alg()], nil
	})
}
