package tokenserver

import (
	"net/http"
	"slices"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// Metadata is the authorization server metadata (RFC 8414 §2).
type Metadata struct {
	Issuer                               string   `json:"issuer"`
	TokenEndpoint                        string   `json:"token_endpoint"`
	JWKSURI                              string   `json:"jwks_uri"`
	IntrospectionEndpoint                string   `json:"introspection_endpoint"`
	GrantTypesSupported                  []string `json:"grant_types_supported"`
	ResponseTypesSupported               []string `json:"response_types_supported"`
	TokenEndpointAuthMethodsSupported    []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs         []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethods     []string `json:"introspection_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthSigningAlgs []string `json:"introspection_endpoint_auth_signing_alg_values_supported"`
	AccessTokenSigningAlgValuesSupported []string `json:"access_token_signing_alg_values_supported,omitempty"`
	IDTokenSigningAlgValuesSupported     []string `json:"id_token_signing_alg_values_supported,omitempty"`
	SubjectTypesSupported                []string `json:"subject_types_supported,omitempty"`
	DPoPSigningAlgValuesSupported        []string `json:"dpop_signing_alg_values_supported"`
	// CertificateBoundAccessTokens (RFC 8705 §3.3): tls_client_auth binds tokens to the client
	// certificate; only when the server verifies client certificates.
	CertificateBoundAccessTokens bool `json:"tls_client_certificate_bound_access_tokens,omitempty"`
	// RevocationListURI is not a registered metadata field: this server's revocation list
	// (RevocationsPath), which pkg/m2mauth verifiers follow when they find it here.
	RevocationListURI string `json:"m2m_revocation_list_uri,omitempty"`
}

// discovery serves the metadata, at the RFC 8414 and the OpenID Connect discovery paths alike.
func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	algs := []string{}
	if st := s.cfg.Keys.current(); st != nil {
		for _, k := range st.set.Keys {
			if st.published[k.KID] && !slices.Contains(algs, string(k.Algorithm)) {
				algs = append(algs, string(k.Algorithm))
			}
		}
	}
	authMethods, assertionAlgs := advertisedAuth(s.authenticators)
	base := s.advertisedBase(r)
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, Metadata{
		Issuer:                               s.cfg.IssuerURL,
		TokenEndpoint:                        issuer.TokenURL(base),
		JWKSURI:                              base + "/.well-known/jwks.json",
		IntrospectionEndpoint:                base + "/oauth2/introspect",
		GrantTypesSupported:                  []string{GrantClientCredentials},
		ResponseTypesSupported:               []string{},
		TokenEndpointAuthMethodsSupported:    authMethods,
		TokenEndpointAuthSigningAlgs:         assertionAlgs,
		IntrospectionEndpointAuthMethods:     authMethods,
		IntrospectionEndpointAuthSigningAlgs: assertionAlgs,
		AccessTokenSigningAlgValuesSupported: algs,
		// OpenID discovery clients read the algorithms from here; this server issues no ID
		// tokens, but its access tokens are signed with these.
		IDTokenSigningAlgValuesSupported: algs,
		SubjectTypesSupported:            []string{"public"},
		DPoPSigningAlgValuesSupported:    dpop.Algorithms(),
		RevocationListURI:                base + RevocationsPath,
		CertificateBoundAccessTokens:     s.cfg.ClientCertificates,
	})
}

// advertisedBase is the URL under which the metadata names the endpoints for r: the issuer to a
// request addressed to the issuer's host (through the public door, which keeps the Host), else
// the in-cluster URL (a pod that reached the Service by any of its names). The issuer stays the
// same for both (RFC 8414 §3.3), so tokens verify alike whichever door a caller used; only where
// it fetches keys and tokens differs, and never through the public door from inside the cluster.
func (s *Server) advertisedBase(r *http.Request) string {
	if s.cfg.InClusterURL == s.cfg.IssuerURL || issuer.SameHost(s.cfg.IssuerURL, r.Host) {
		return s.cfg.IssuerURL
	}
	return s.cfg.InClusterURL
}

// advertisedAuth are the client authentication methods and assertion signing algorithms of the
// metadata: those the authenticators advertise, in the order of the list, each once. The token
// and the introspection endpoint authenticate clients alike, so both name the same.
func advertisedAuth(list []authenticator) (methods, signingAlgs []string) {
	methods, signingAlgs = []string{}, []string{}
	for _, a := range list {
		m, algs := a.advertised()
		methods = appendNew(methods, m)
		signingAlgs = appendNew(signingAlgs, algs)
	}
	return methods, signingAlgs
}

// appendNew appends to list the values it does not hold yet.
func appendNew(list, values []string) []string {
	for _, v := range values {
		if !slices.Contains(list, v) {
			list = append(list, v)
		}
	}
	return list
}
