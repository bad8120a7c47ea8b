package tokenserver

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/clock"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// MaxPrivateKeyJWTLifetime bounds exp - iat of a private_key_jwt assertion, so that a captured
// assertion is useless soon and the replay cache stays small.
const MaxPrivateKeyJWTLifetime = 5 * time.Minute

// privateKeyJWTAlgs are the algorithms a client's assertion may be signed with: those of the
// keys a client can have. The metadata advertises what the parser accepts.
var privateKeyJWTAlgs = []string{"ES256", "RS256", "EdDSA"}

// privateKeyJWTAuth is private_key_jwt (RFC 7523 §3): the client signs its assertion with a key of
// its own and names itself in iss, so client_id may be omitted.
type privateKeyJWTAuth struct {
	// audiences are those an assertion may name (Config.assertionAudiences), each alone.
	audiences []string
	clock     clock.PassiveClock
	// replays holds the jtis of accepted assertions.
	replays replayCache
	// decoyKeys verify, by algorithm, assertions of unknown clients and of unknown kids, so that
	// the work does not tell them apart from a wrong signature.
	decoyKeys map[string]crypto.PublicKey
	// exhausted reports whether an authenticated client is over its issuance limit (false for
	// every client when none applies). A token request of such a client is refused with 429 after authentication
	// and issues nothing, so its jti takes no place in the replay cache, which a client that
	// floods would otherwise fill for its whole namespace.
	exhausted func(*CachedClient) bool
}

func newPrivateKeyJWTAuth(cfg Config) (authenticator, error) {
	decoyKeys, err := decoyPublicKeys()
	if err != nil {
		return nil, err
	}
	return &privateKeyJWTAuth{audiences: cfg.assertionAudiences(), clock: cfg.Clock, decoyKeys: decoyKeys, replays: replayCache{budget: cfg.ReplayBudget}, exhausted: cfg.exhausted}, nil
}

func (*privateKeyJWTAuth) advertised() (methods, signingAlgs []string) {
	return []string{"private_key_jwt"}, privateKeyJWTAlgs
}

// applies to an assertion whose iss is the client ID: the client's own, as RFC 7523 §3 has it.
// (The cluster's own ServiceAccount issuer is taken before, in authenticatorOrder.)
func (*privateKeyJWTAuth) applies(req *tokenRequest) bool {
	return req.assertionGiven && req.assertionIssuer != "" && req.assertionIssuer == req.clientID
}

func (a *privateKeyJWTAuth) authenticate(_ context.Context, req *tokenRequest, client *CachedClient, st *keyState) (*CachedClient, *oauthError) {
	if client == nil {
		return nil, invalidClient(reasonUnknownClient)
	}
	record, err := a.verify(client, st, req.assertion, req.limited && a.exhausted != nil && a.exhausted(client))
	switch {
	case err != nil:
		return nil, invalidClient(reasonAssertionInvalid)
	case client.Spec.Disabled:
		return nil, invalidClient(reasonDisabled)
	}
	req.recordJTI = record
	return client, nil
}

// clientKeys returns the usable public keys of the client by kid: those of its spec, and those
// of the key pairs the manager generated that status accepts now, authenticated by their MAC (a
// generated key no longer asked for only in its grace period). A key that does not parse (or is
// too weak) is left out and never verifies.
func clientKeys(c *CachedClient, st *keyState, now time.Time) map[string]assertionKey {
	out := map[string]assertionKey{}
	add := func(k *m2mv1alpha1.ClientPublicKey) {
		if pub, err := credentials.JWK(k).PublicKey(); err == nil {
			out[k.KeyID] = assertionKey{key: pub, alg: k.Algorithm}
		}
	}
	for i := range c.Spec.Authentication.PublicKeys {
		add(&c.Spec.Authentication.PublicKeys[i])
	}
	current := c.acceptsCurrent(credentials.FormKey)
	for i := range c.Status.AcceptedSecrets {
		e := &c.Status.AcceptedSecrets[i]
		// A key's entry needs its MAC even before enforcement: no version without MACs wrote one.
		if e.form() == credentials.FormKey && e.acceptedAt(now) && (current || e.expiring()) && c.verdictsUnder(st.status).entries[i] {
			add(e.PublicKey)
		}
	}
	return out
}

// verify checks an RFC 7523 §3 client assertion of client, as the current revision
// (draft-ietf-oauth-rfc7523bis) asks: signed by one of the client's keys with that key's
// algorithm; iss and sub equal to the client ID; aud equal to this issuer identifier alone (not
// the token endpoint URL, which let one assertion pass at several endpoints); exp, iat and jti
// present, exp at most 5 minutes after iat; and a jti not accepted before within its lifetime.
//
// With deferJTI (a token request of a client over its issuance limit, which issues nothing) the
// jti is not kept: verify returns record, which keeps it and reports whether it was new, for the
// caller to run should the request be served after all.
func (a *privateKeyJWTAuth) verify(client *CachedClient, st *keyState, assertion string, deferJTI bool) (record func() bool, err error) {
	keys := clientKeys(client, st, a.clock.Now())
	parser := jwt.NewParser(
		jwt.WithValidMethods(privateKeyJWTAlgs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(assertionLeeway),
		jwt.WithTimeFunc(a.clock.Now),
		jwt.WithIssuer(client.Status.ClientID),
		jwt.WithSubject(client.Status.ClientID),
	)
	claims := jwt.MapClaims{}
	var mismatch error
	_, err = parser.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
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
		return a.decoyKeys[t.Method.Alg()], nil
	})
	if err = errors.Join(mismatch, err); err != nil {
		return nil, fmt.Errorf("%w: %v", errAssertion, err)
	}
	aud, _ := claims.GetAudience()
	if len(aud) != 1 || !slices.Contains(a.audiences, aud[0]) {
		return nil, fmt.Errorf("%w: aud %q is not the issuer alone", errAssertion, aud)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if iat == nil || exp.Sub(iat.Time) > MaxPrivateKeyJWTLifetime {
		return nil, fmt.Errorf("%w: no iat, or a lifetime over %s", errAssertion, MaxPrivateKeyJWTLifetime)
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		return nil, fmt.Errorf("%w: no jti", errAssertion)
	}
	record = func() bool {
		return a.replays.first(client.Namespace, client.Status.ClientID, jti, exp.Add(assertionLeeway), a.clock.Now())
	}
	if deferJTI {
		return record, nil
	}
	if !record() {
		return nil, fmt.Errorf("%w: jti replayed, too long, or over the namespace's share of the replay cache", errAssertion)
	}
	return nil, nil
}

// decoy does the signature work of an assertion check for an unknown client, with a decoy key of
// the assertion's algorithm, so that the answer's timing does not tell whether a client ID
// exists.
func (a *privateKeyJWTAuth) decoy(req *tokenRequest) {
	_, _ = jwt.NewParser(jwt.WithValidMethods(privateKeyJWTAlgs)).Parse(req.assertion, func(t *jwt.Token) (any, error) {
		return a.decoyKeys[t.Method.Alg()], nil
	})
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
