package tokenserver

import (
	"context"
	"slices"
	"strings"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// federatedAuth takes a token of a federated issuer (another cluster's ServiceAccount issuer, a
// CI system, a cloud) as the assertion of the client named by client_id. Like the ServiceAccount
// path it is a profile of this server, not RFC 7523 §3: the token's sub is a workload. The token
// must be of an issuer the administrator configured, for this issuer, valid now, with an (issuer,
// subject) pair that spec.authentication.federated names. The metadata does not advertise it.
type federatedAuth struct {
	federation *Federation
	// serviceAccounts is only asked whether the cluster's own issuer is known yet.
	serviceAccounts ServiceAccountTokens
	// audiences are those an assertion may name (Config.assertionAudiences).
	audiences []string
}

func newFederatedAuth(cfg Config) (authenticator, error) {
	return &federatedAuth{federation: cfg.Federation, serviceAccounts: cfg.ServiceAccounts, audiences: cfg.assertionAudiences()}, nil
}

func (*federatedAuth) advertised() (methods, signingAlgs []string) { return nil, nil }

// applies to an assertion whose (unverified) iss is a configured issuer; the verification that
// follows uses that issuer's keys only.
func (a *federatedAuth) applies(req *tokenRequest) bool {
	return req.assertionGiven && a.federation.Trusts(req.assertionIssuer)
}

// decoy does nothing: the token is verified against its issuer's keys whatever the client, so an
// unknown client costs the same work already. The verification cache (assertioncache.go) does
// not change that: whether a token is answered from it depends on the token alone, never on
// the client named with it.
func (*federatedAuth) decoy(*tokenRequest) {}

func (a *federatedAuth) authenticate(ctx context.Context, req *tokenRequest, client *CachedClient, _ *keyState) (*CachedClient, *oauthError) {
	// Without client_id, iss names the client and private_key_jwt takes the request first
	// (authenticatorOrder); the check keeps this path right on its own.
	if bad := workloadClientID(req); bad != nil {
		return nil, bad
	}
	iss := req.assertionIssuer
	sub, err := a.federation.Verify(ctx, iss, req.assertion, a.audiences)
	switch {
	case err != nil:
		return nil, invalidClient(reasonAssertionInvalid)
	case strings.HasPrefix(sub, "system:serviceaccount:") && a.serviceAccounts != nil && a.serviceAccounts.Issuer() == "":
		// Until the cluster's own issuer is known, a ServiceAccount subject may be the
		// cluster's own, which must take the namespace-checked path.
		return nil, invalidClient(reasonServiceAccountIssuerUnknown)
	case client == nil:
		return nil, invalidClient(reasonUnknownClient)
	case !slices.Contains(client.Spec.Authentication.Federated, m2mv1alpha1.FederatedIdentity{Issuer: iss, Subject: sub}):
		return nil, invalidClient(reasonIdentityNotAllowed)
	case client.Spec.Disabled:
		return nil, invalidClient(reasonDisabled)
	}
	return client, nil
}
