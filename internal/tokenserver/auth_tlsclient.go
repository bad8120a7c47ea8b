package tokenserver

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// podIdentityPrefix begins the URI SAN of a pod certificate of the signer m2m.dev/pod-client:
// spiffe://m2m.dev/ns/<namespace>/sa/<serviceaccount>.
const podIdentityPrefix = "spiffe://" + m2mv1alpha1.PodIdentityTrustDomain + "/ns/"

// tlsClientAuth is tls_client_auth (RFC 8705 §2.1) with the PKI of the manager's pod-client CA:
// the TLS listener has verified the client certificate against that CA (--client-ca-file), the
// request names the client with client_id and carries no other credential, and the certificate
// names a pod's ServiceAccount that the client lists in spec.authentication.podCertificates. The
// subject, DNS names and every other field are never read: only the single URI SAN authorises.
// It exists only when the server verifies client certificates, so that the metadata advertises
// it only then.
type tlsClientAuth struct{}

func newTLSClientAuth(cfg Config) (authenticator, error) {
	if !cfg.ClientCertificates {
		return nil, nil
	}
	return tlsClientAuth{}, nil
}

func (tlsClientAuth) advertised() (methods, signingAlgs []string) {
	return []string{"tls_client_auth"}, nil
}

// applies to a request that came with a verified client certificate and no other credential:
// a client that sends a secret or an assertion over a connection with a certificate
// authenticates with those, and its tokens are not bound.
func (tlsClientAuth) applies(req *tokenRequest) bool {
	return req.peerCertificate != nil && !req.assertionGiven && !req.basic && !req.secretGiven
}

// decoy does nothing: the certificate's identity is parsed whatever the client, and no secret is
// compared, so an unknown client costs the same work already.
func (tlsClientAuth) decoy(*tokenRequest) {}

func (tlsClientAuth) authenticate(_ context.Context, req *tokenRequest, client *CachedClient, _ *keyState) (*CachedClient, *oauthError) {
	ns, sa, ok := podIdentity(req.peerCertificate)
	switch {
	case req.clientID == "":
		return nil, invalidClient(reasonNoCredentials)
	case !ok:
		return nil, invalidClient(reasonCertificateIdentity)
	case client == nil:
		return nil, invalidClient(reasonUnknownClient)
	case ns != client.Namespace || client.Spec.Authentication.PodCertificates == nil ||
		!slices.Contains(client.Spec.Authentication.PodCertificates.ServiceAccounts, sa):
		return nil, invalidClient(reasonCertificateNotAllowed)
	case client.Spec.Disabled:
		return nil, invalidClient(reasonDisabled)
	}
	sum := sha256.Sum256(req.peerCertificate.Raw)
	req.certificateThumbprint = base64.RawURLEncoding.EncodeToString(sum[:])
	return client, nil
}

// podIdentity returns the namespace and ServiceAccount that leaf names in its URI SAN, which must
// be its only SAN and exactly spiffe://m2m.dev/ns/<namespace>/sa/<serviceaccount>: no user info,
// port, query, fragment, escapes or extra path segments, a namespace that is a DNS label and a
// ServiceAccount name that is a DNS subdomain (as the API server names them). Anything else is
// refused rather than read leniently: two readings of one certificate would be two identities.
func podIdentity(leaf *x509.Certificate) (ns, sa string, ok bool) {
	if len(leaf.URIs) != 1 || len(leaf.DNSNames) > 0 || len(leaf.EmailAddresses) > 0 || len(leaf.IPAddresses) > 0 {
		return "", "", false
	}
	u := leaf.URIs[0]
	// The URI as crypto/x509 parsed it, written back, must be the prefix and the path alone:
	// that leaves out another scheme or host, user info, a port, a query, a fragment and
	// escapes. (url.Parse lowers the scheme's case, which RFC 3986 §3.1 makes equivalent.)
	rest, found := strings.CutPrefix(u.Path, "/ns/")
	if !found || u.String() != podIdentityPrefix+rest || u.RawPath != "" || u.Opaque != "" {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[1] != "sa" {
		return "", "", false
	}
	ns, sa = parts[0], parts[2]
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(sa)) > 0 {
		return "", "", false
	}
	return ns, sa, true
}
