package tokenserver

import (
	"context"
	"slices"
)

// serviceAccountAuth takes a Kubernetes ServiceAccount token of this cluster as the assertion of
// the client named by client_id. It is a profile of this server, not RFC 7523 §3 client
// authentication: the token's sub is a workload, not the client. The token must be for this
// issuer, valid now, and of a ServiceAccount in the client's namespace that
// spec.authentication.serviceAccounts names. The metadata does not advertise it.
type serviceAccountAuth struct {
	// tokens verifies the cluster's ServiceAccount tokens; nil refuses every assertion that comes
	// here.
	tokens ServiceAccountTokens
	// audiences are those an assertion may name (Config.assertionAudiences).
	audiences []string
	// clusterIssuerOnly limits it to assertions whose iss is the cluster's own issuer, for the
	// entry of authenticatorOrder that comes before every other assertion.
	clusterIssuerOnly bool
}

// newClusterServiceAccountAuth is the ServiceAccount path for the cluster's own issuer only.
func newClusterServiceAccountAuth(cfg Config) (authenticator, error) {
	return &serviceAccountAuth{tokens: cfg.ServiceAccounts, audiences: cfg.assertionAudiences(), clusterIssuerOnly: true}, nil
}

// newServiceAccountAuth is the ServiceAccount path for any assertion.
func newServiceAccountAuth(cfg Config) (authenticator, error) {
	return &serviceAccountAuth{tokens: cfg.ServiceAccounts, audiences: cfg.assertionAudiences()}, nil
}

func (*serviceAccountAuth) advertised() (methods, signingAlgs []string) { return nil, nil }

func (a *serviceAccountAuth) applies(req *tokenRequest) bool {
	switch {
	case !req.assertionGiven:
		return false
	case !a.clusterIssuerOnly:
		return true
	}
	return a.tokens != nil && req.assertionIssuer != "" && req.assertionIssuer == a.tokens.Issuer()
}

// decoy does nothing: the token is verified against the cluster's keys whatever the client, so an
// unknown client costs the same work already. The verification cache (assertioncache.go) does
// not change that: whether a token is answered from it depends on the token alone, never on
// the client named with it.
func (*serviceAccountAuth) decoy(*tokenRequest) {}

func (a *serviceAccountAuth) authenticate(ctx context.Context, req *tokenRequest, client *CachedClient, _ *keyState) (*CachedClient, *oauthError) {
	if bad := workloadClientID(req); bad != nil {
		return nil, bad
	}
	if a.tokens == nil {
		return nil, invalidClient(reasonAssertionNotSupported)
	}
	ns, name, err := a.tokens.Verify(ctx, req.assertion, a.audiences)
	switch {
	case err != nil:
		return nil, invalidClient(reasonAssertionInvalid)
	case client == nil:
		return nil, invalidClient(reasonUnknownClient)
	case ns != client.Namespace || !slices.Contains(client.Spec.Authentication.ServiceAccounts, name):
		return nil, invalidClient(reasonServiceAccountNotAllowed)
	case client.Spec.Disabled:
		return nil, invalidClient(reasonDisabled)
	}
	return client, nil
}
