package v1alpha1

import "net/url"

// PodClientSignerName is the signer of pod certificates that authenticate clients (spec.authentication.podCertificates).
const PodClientSignerName = "m2m.dev/pod-client"

// PodIdentityTrustDomain is the SPIFFE trust domain of the one URI SAN of every certificate that
// PodClientSignerName issues.
const PodIdentityTrustDomain = "m2m.dev"

// PodIdentity is the one URI SAN of a pod certificate of PodClientSignerName:
// spiffe://m2m.dev/ns/<namespace>/sa/<serviceaccount>, the pod's namespace and ServiceAccount,
// which is all the token server authorises on. The signer writes it, the token server reads it,
// and nothing else is accepted in its place.
func PodIdentity(namespace, serviceAccount string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: PodIdentityTrustDomain, Path: "/ns/" + namespace + "/sa/" + serviceAccount}
}
