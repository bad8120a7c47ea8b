package tokenserver

import (
	"context"
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
// compared in constant time with each accepted entry, and each entry's MAC verified (a decoy
// client's for an unknown one).
type secretAuth struct {
	clock clock.PassiveClock
	// clients, when a Refresher, reads a client past its cache when a secret is refused while
	// the cache may be behind the API server.
	clients ClientSource
	// decoyClient is compared against when the client ID is unknown, so that an unknown client
	// costs the same work as a wrong secret: its entries, and MACs under decoyStatusKeys.
	decoyClient     *m2mv1alpha1.M2MClient
	decoyStatusKeys *statusmac.Set
}

// newSecretAuth makes the decoy client: two entries, as a client has in a rotation's grace
// period, sealed under a status key of its own.
func newSecretAuth(cfg Config) (authenticator, error) {
	decoyKey, err := statusmac.Generate(statusmac.StateActive, time.Now())
	if err != nil {
		return nil, err
	}
	a := &secretAuth{
		clock:           cfg.Clock,
		clients:         cfg.Clients,
		decoyStatusKeys: &statusmac.Set{Keys: []*statusmac.Key{decoyKey}},
		decoyClient:     &m2mv1alpha1.M2MClient{Status: m2mv1alpha1.M2MClientStatus{ClientID: "decoy"}},
	}
	for range 2 {
		secret, err := credentials.NewSecret()
		if err != nil {
			return nil, err
		}
		a.decoyClient.Status.AcceptedSecrets = append(a.decoyClient.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(secret)})
	}
	if err := a.decoyStatusKeys.Seal(a.decoyClient); err != nil {
		return nil, err
	}
	return a, nil
}

func (*secretAuth) advertised() (methods, signingAlgs []string) { return secretMethods, nil }

// applies to every request without an assertion, whether or not it carries a secret: one
// without credentials is refused here.
func (*secretAuth) applies(req *tokenRequest) bool { return !req.assertionGiven }

func (a *secretAuth) decoy(req *tokenRequest) {
	credentials.VerifyWith(a.decoyClient.Status.AcceptedSecrets, req.clientSecret, a.clock.Now(), func(e *m2mv1alpha1.AcceptedSecret) bool {
		return a.decoyStatusKeys.VerifyEntry(a.decoyClient, e)
	})
}

func (a *secretAuth) authenticate(ctx context.Context, req *tokenRequest, client *m2mv1alpha1.M2MClient, st *keyState) (*m2mv1alpha1.M2MClient, *oauthError) {
	matched := client != nil && a.matches(req.clientSecret, client, st)
	if client != nil && !matched && req.clientSecret != "" {
		// The manager puts a new secret into the Secret only after the status accepts it, but a
		// cache that fell behind (after an API-server restart, say) has not seen that status yet.
		if r, ok := a.clients.(Refresher); ok {
			id := client.Status.ClientID
			if fresh := r.Refresh(ctx, client, func(c *m2mv1alpha1.M2MClient) bool {
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
// period or of the credential the client asks for now.
func (a *secretAuth) matches(secret string, client *m2mv1alpha1.M2MClient, st *keyState) bool {
	current := credentials.AcceptsCurrent(client, credentials.FormSecret)
	return credentials.VerifyWith(client.Status.AcceptedSecrets, secret, a.clock.Now(), func(e *m2mv1alpha1.AcceptedSecret) bool {
		return credentials.FormOf(e) == credentials.FormSecret && st.trustsEntry(client, e) && (current || e.ExpiresAt != nil)
	})
}
