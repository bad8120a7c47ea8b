package tokenserver

import (
	"context"
	"crypto/subtle"
	"time"

	"k8s.io/utils/clock"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// secretMethods are the two ways of sending a client secret (RFC 6749 §2.3.1): HTTP Basic, and
// client_id and client_secret in the body. Parsing reads both alike.
var secretMethods = []string{"client_secret_basic", "client_secret_post"}

// secretAuth checks a client secret against the hashes in the client's status. An unknown client,
// a wrong secret and a disabled client give the same error after the same work: one hash,
// compared in constant time with each accepted entry, and each entry's MAC verdict consulted (a
// decoy client's for an unknown one, through the same memo).
type secretAuth struct {
	clock clock.PassiveClock
	// clients, when a Refresher, reads a client past its cache when a secret is refused while
	// the cache may be behind the API server.
	clients ClientSource
	// decoyClient is compared against when the client ID is unknown, so that an unknown client
	// costs the same work as a wrong secret: its entries, and their MACs' verdicts under
	// decoyKeys, memoized as a known client's are.
	decoyClient *CachedClient
	decoyKeys   *keyState
}

// newSecretAuth makes the decoy client: two entries, as a client has in a rotation's grace
// period, sealed under a status key of its own.
func newSecretAuth(cfg Config) (authenticator, error) {
	decoyKey, err := statusmac.Generate(statusmac.StateActive, time.Now())
	if err != nil {
		return nil, err
	}
	decoyStatusKeys := &statusmac.Set{Keys: []*statusmac.Key{decoyKey}}
	decoy := &m2mv1alpha1.M2MClient{Status: m2mv1alpha1.M2MClientStatus{ClientID: "decoy"}}
	for range 2 {
		secret, err := credentials.NewSecret()
		if err != nil {
			return nil, err
		}
		decoy.Status.AcceptedSecrets = append(decoy.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(secret)})
	}
	if err := decoyStatusKeys.Seal(decoy); err != nil {
		return nil, err
	}
	return &secretAuth{
		clock:       cfg.Clock,
		clients:     cfg.Clients,
		decoyClient: NewCachedClient(decoy),
		decoyKeys:   &keyState{status: decoyStatusKeys},
	}, nil
}

func (*secretAuth) advertised() (methods, signingAlgs []string) { return secretMethods, nil }

// applies to every request without an assertion, whether or not it carries a secret: one
// without credentials is refused here.
func (*secretAuth) applies(req *tokenRequest) bool { return !req.assertionGiven }

func (a *secretAuth) decoy(req *tokenRequest) {
	a.matches(req.clientSecret, a.decoyClient, a.decoyKeys)
}

func (a *secretAuth) authenticate(ctx context.Context, req *tokenRequest, client *CachedClient, st *keyState) (*CachedClient, *oauthError) {
	matched := client != nil && a.matches(req.clientSecret, client, st)
	if client != nil && !matched && req.clientSecret != "" {
		// The manager puts a new secret into the Secret only after the status accepts it, but a
		// cache that fell behind (after an API-server restart, say) has not seen that status yet.
		if r, ok := a.clients.(Refresher); ok {
			id := client.Status.ClientID
			if fresh := r.Refresh(ctx, client, func(c *CachedClient) bool {
				return c.Status.ClientID == id && st.trustsClientID(c) && a.matches(req.clientSecret, c, st)
			}); fresh != nil {
				client, matched = fresh, true
			}
		}
	}
	switch {
	case req.clientID == "" || req.clientSecret == "":
		return nil, invalidClient(reasonNoCredentials)
	case client == nil:
		return nil, invalidClient(reasonUnknownClient)
	case !matched:
		return nil, invalidClient(reasonWrongSecret)
	case client.Spec.Disabled:
		return nil, invalidClient(reasonDisabled)
	}
	return client, nil
}

// matches reports whether secret is one that client accepts now: an entry of a secret (never a
// key pair's, whose hash is of public values) whose MAC holds, and which is either in its grace
// period or of the credential the client asks for now. Like credentials.VerifyWith, it hashes
// secret once, compares the hash with every entry in constant time and asks every entry's
// verdict, so that the work does not depend on which entry, if any, matches.
func (a *secretAuth) matches(secret string, client *CachedClient, st *keyState) bool {
	current := client.acceptsCurrent(credentials.FormSecret)
	presented := []byte(credentials.Hash(secret))
	now := a.clock.Now()
	match := 0
	for i := range client.Status.AcceptedSecrets {
		e := &client.Status.AcceptedSecrets[i]
		eq := subtle.ConstantTimeCompare(presented, []byte(e.Hash))
		ok := e.form() == credentials.FormSecret && st.trustsEntry(client, i) && (current || e.expiring())
		if ok && e.acceptedAt(now) {
			match |= eq
		}
	}
	return match == 1
}
