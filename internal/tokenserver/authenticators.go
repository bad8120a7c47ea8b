package tokenserver

import (
	"context"
	"net/http"
)

// authenticator is one way for a client to authenticate at the token and introspection
// endpoints. A new way is one auth_*.go file that implements it, its test, and one line in
// authenticatorOrder. Authenticators share what this file and the rest of the package declare,
// never each other's declarations (test/layout checks it), so that one can be read, changed or
// removed alone.
type authenticator interface {
	// advertised are the token_endpoint_auth_methods_supported values (RFC 8414 §2) that the
	// metadata names for this way, and the algorithms its assertions may be signed with
	// (token_endpoint_auth_signing_alg_values_supported); both empty for a profile that the
	// metadata does not name. The caller must not modify them.
	advertised() (methods, signingAlgs []string)
	// applies reports whether this way decides req. It reads only what parsing found, never a
	// verified claim, and is cheap: every request asks each authenticator before the one that
	// applies.
	applies(req *tokenRequest) bool
	// decoy does, when req's client ID names no client, the work that authenticate would do with a
	// client's credentials, so that the time of the answer does not tell whether a client exists.
	decoy(req *tokenRequest)
	// authenticate checks req's credentials for client, which is nil when the client ID names no
	// client (decoy has run then), under the key state st (nil before any is loaded). It returns
	// the client, or the error to answer, whose reason is the metrics label.
	authenticate(ctx context.Context, req *tokenRequest, client *CachedClient, st *keyState) (*CachedClient, *oauthError)
}

// authenticatorOrder makes the authenticators, in the order they are asked: the first that
// applies decides, even when it refuses, and no later one is tried. The order is security
// behaviour, and each rule has its test in authenticators_test.go:
//   - A verified client certificate with no other credential is tls_client_auth, before the
//     secret path, which takes every request without an assertion (and refuses one without a
//     secret). A constructor returns nil for a way that the server's configuration leaves out.
//   - A secret is for requests without an assertion only (parsing refuses both at once).
//   - Of assertions, the cluster's own ServiceAccount tokens come first, before anything that
//     reads the unverified iss. Their path checks that the ServiceAccount is in the client's
//     namespace; a federated match (an administrator may list the cluster's issuer as federated)
//     or private_key_jwt (a client ID could equal the issuer) would skip that check.
//   - An assertion whose iss is the client ID is the client's own (RFC 7523 §3). Without
//     client_id, iss names the client, so every other assertion with an iss and without
//     client_id comes here.
//     It comes before the federated issuers, so that no issuer an administrator lists changes
//     how a client with a key of its own authenticates.
//   - The federated issuers come before the ServiceAccount path, which takes every other
//     assertion and so must be last.
//
// The workload paths (ServiceAccount and federated) need client_id, since several clients may
// allow one workload: each refuses a request without it before verifying anything. By the order
// above, only the cluster's own tokens and tokens without iss reach them without it.
var authenticatorOrder = []func(Config) (authenticator, error){
	newTLSClientAuth,
	newSecretAuth,
	newClusterServiceAccountAuth,
	newPrivateKeyJWTAuth,
	newFederatedAuth,
	newServiceAccountAuth,
}

// newAuthenticators makes the authenticators of authenticatorOrder for cfg, which New has
// completed (issuer, clock).
func newAuthenticators(cfg Config) ([]authenticator, error) {
	out := make([]authenticator, 0, len(authenticatorOrder))
	for _, newAuth := range authenticatorOrder {
		a, err := newAuth(cfg)
		if err != nil {
			return nil, err
		}
		if a != nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// authenticated parses a request and authenticates its client, the first steps of both the token
// and the introspection endpoint. When it returns false it has written the error.
// A source over its limit of failed authentications (FailureLimit) is refused first, before
// any hashing or signature work; an authentication that fails counts against its source.
// limited says that the issuance limit governs the request (the token endpoint).
func (s *Server) authenticated(w http.ResponseWriter, r *http.Request, limited bool) (*tokenRequest, *CachedClient, bool) {
	from := s.cfg.ClientAddresses.of(r)
	if wait, over := s.sources.refused(from); over {
		s.refuseSource(w, r, wait)
		return nil, nil, false
	}
	req, bad := parseRequest(w, r)
	if req != nil {
		req.limited = limited
	}
	var named *CachedClient
	if bad == nil {
		var client *CachedClient
		if client, named, bad = s.authenticate(r.Context(), req); bad == nil {
			return req, client, true
		}
	}
	if bad.Code == ErrInvalidClient {
		s.sources.failed(from)
	}
	s.fail(w, r, bad, req, named)
	return nil, nil, false
}

// authenticate finds the client that req names and lets the first authenticator that applies
// check its credentials. The client is looked up before the authenticator is chosen, once, so
// that every way does the decoy work for an unknown client in the same place. It returns the
// authenticated client, or the error to answer and the client that req names (nil when none
// does), whose owner may see the refusal.
func (s *Server) authenticate(ctx context.Context, req *tokenRequest) (client, named *CachedClient, bad *oauthError) {
	st := s.cfg.Keys.current()
	named, _ = s.lookup(req.clientID, st)
	for _, a := range s.authenticators {
		if !a.applies(req) {
			continue
		}
		if named == nil {
			a.decoy(req)
		}
		client, bad = a.authenticate(ctx, req, named, st)
		return client, named, bad
	}
	// Not reached while the list has a way for requests without an assertion and one for any
	// assertion; refused all the same if a change loses one.
	return nil, named, invalidClient(reasonNoAuthenticator)
}

// workloadClientID refuses a workload assertion (a ServiceAccount or federated token) that does
// not come with client_id: several clients may allow one workload, so the request must say
// which. Only private_key_jwt names its client in iss.
func workloadClientID(req *tokenRequest) *oauthError {
	if req.clientIDFromAssertion {
		return newError(reasonClientIDMissing, "client_id is required with a ServiceAccount or federated assertion")
	}
	return nil
}
