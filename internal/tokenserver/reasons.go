package tokenserver

import "net/http"

// reason is why the server refused a request, finer than the OAuth error the caller sees: the
// label of m2m_token_failures_total, the debug log's, and what `kubectl m2m why` shows the
// client's owner. Every reason is declared once, below, with its OAuth error and HTTP status
// (newError takes both from it), and docs/token-server.md's table is tested against this list.
type reason struct {
	name   string
	code   string
	status int
	// help says what the reason means and what to do about it, for the client's owner: it
	// names no client, secret or value of the request.
	help string
}

// reasons is every reason, in the order declared below.
var reasons []*reason

func newReason(name, code string, status int, help string) *reason {
	r := &reason{name: name, code: code, status: status, help: help}
	reasons = append(reasons, r)
	return r
}

// The reasons, grouped by the OAuth error they answer.
var (
	reasonMethod            = newReason("method", ErrInvalidRequest, http.StatusMethodNotAllowed, "The request was not a POST. Send POST to the token and introspection endpoints.")
	reasonQueryParameters   = newReason("query_parameters", ErrInvalidRequest, http.StatusBadRequest, "OAuth parameters came in the URL, where access logs keep them. Send them in the request body.")
	reasonBodyTooLarge      = newReason("body_too_large", ErrInvalidRequest, http.StatusRequestEntityTooLarge, "The body is over 64 KiB. Send only the OAuth parameters.")
	reasonBodyUnreadable    = newReason("body_unreadable", ErrInvalidRequest, http.StatusBadRequest, "The body could not be read: the connection broke or was too slow. Retry; if it lasts, check what sits between the workload and the token server.")
	reasonContentType       = newReason("content_type", ErrInvalidRequest, http.StatusBadRequest, "The Content-Type is neither application/x-www-form-urlencoded nor application/json. Send one of them.")
	reasonFormSyntax        = newReason("form_syntax", ErrInvalidRequest, http.StatusBadRequest, "The form body does not decode. Encode it with the HTTP or OAuth library's form encoder.")
	reasonJSONSyntax        = newReason("json_syntax", ErrInvalidRequest, http.StatusBadRequest, "The JSON body is not one object of string parameters (audience and resource may be lists of strings). Fix the JSON the workload sends.")
	reasonRepeatedParameter = newReason("repeated_parameter", ErrInvalidRequest, http.StatusBadRequest, "A single-valued parameter (client_id, grant_type, scope, ...) appears twice. Send each once.")
	reasonParameterCase     = newReason("parameter_case", ErrInvalidRequest, http.StatusBadRequest, "A JSON parameter name is not lower case (CLIENT_ID). Use the names of RFC 6749: client_id, client_secret, grant_type, scope.")
	reasonAuthScheme        = newReason("auth_scheme", ErrInvalidRequest, http.StatusBadRequest, "The Authorization header is not HTTP Basic. Send the client secret with Basic or in the body, an assertion in the body.")
	reasonTwoAuthMethods    = newReason("two_auth_methods", ErrInvalidRequest, http.StatusBadRequest, "The request carries two credentials: Basic and a client_secret in the body, an assertion and a secret, or two different client IDs. Send one.")
	reasonAssertionType     = newReason("assertion_type", ErrInvalidRequest, http.StatusBadRequest, "client_assertion_type is not urn:ietf:params:oauth:client-assertion-type:jwt-bearer. Send that value.")
	reasonAssertionMissing  = newReason("assertion_missing", ErrInvalidRequest, http.StatusBadRequest, "client_assertion_type came without a client_assertion. Send the assertion (the workload's token file may be empty).")
	reasonClientIDMissing   = newReason("client_id_missing", ErrInvalidRequest, http.StatusBadRequest, "A ServiceAccount or federated token came without client_id. Send the client's ID with it: several clients may allow one workload.")
	reasonNoGrantType       = newReason("no_grant_type", ErrInvalidRequest, http.StatusBadRequest, "grant_type is missing. Send grant_type=client_credentials.")
	reasonNoToken           = newReason("no_token", ErrInvalidRequest, http.StatusBadRequest, "An introspection request without a token parameter. Send the token to introspect.")

	reasonBasicSyntax                 = newReason("basic_syntax", ErrInvalidClient, http.StatusUnauthorized, "The HTTP Basic header does not decode to ID:secret in base64. Fix the workload's Basic encoding.")
	reasonBasicEncoding               = newReason("basic_encoding", ErrInvalidClient, http.StatusUnauthorized, "The Basic ID or secret is not form-encoded as RFC 6749 §2.3.1 asks (a stray %). Form-encode both before the Basic encoding, or send them in the body.")
	reasonNoCredentials               = newReason("no_credentials", ErrInvalidClient, http.StatusUnauthorized, "The request has no client ID or no secret. Check that the workload mounts the client's Secret and sends client_id and client_secret.")
	reasonUnknownClient               = newReason("unknown_client", ErrInvalidClient, http.StatusUnauthorized, "No client has this client ID here: mistyped, deleted, not Ready yet, or in a namespace this token server does not watch. Compare the workload's client_id with kubectl get m2m -A. Not recorded per client.")
	reasonWrongSecret                 = newReason("wrong_secret", ErrInvalidClient, http.StatusUnauthorized, "The secret is not one the client accepts now: a secret past its grace period after a rotation, one that a completed or cancelled holder rotation (spec.rotation.holder) dropped, or another client's. Make the workload read the client's Secret again (restart it, or use a token source that follows the mounted file); a holder outside the cluster needs the secret its rotation left in client_secret.")
	reasonDisabled                    = newReason("disabled", ErrInvalidClient, http.StatusUnauthorized, "The client has spec.disabled: true. Set it to false for the client to get tokens again.")
	reasonAssertionNotSupported       = newReason("assertion_not_supported", ErrInvalidClient, http.StatusUnauthorized, "This token server has no ServiceAccount token verifier (a server embedded without one). Authenticate with a secret or a key pair.")
	reasonAssertionInvalid            = newReason("assertion_invalid", ErrInvalidClient, http.StatusUnauthorized, "The client assertion does not verify: signature, key (kid), issuer, audience (must be the issuer URL), expiry or lifetime, or a replayed jti. Check the token the workload sends against docs/secretless.md.")
	reasonServiceAccountNotAllowed    = newReason("service_account_not_allowed", ErrInvalidClient, http.StatusUnauthorized, "The ServiceAccount token is valid, but its ServiceAccount is not in the client's spec.authentication.serviceAccounts, or is of another namespace. List it there, or run the pod as one listed.")
	reasonServiceAccountIssuerUnknown = newReason("service_account_issuer_unknown", ErrInvalidClient, http.StatusUnauthorized, "A federated token with a ServiceAccount subject came before the token server read the cluster's own issuer. Retry; if it lasts, check that the token server may read service-account issuer discovery.")
	reasonIdentityNotAllowed          = newReason("identity_not_allowed", ErrInvalidClient, http.StatusUnauthorized, "The federated token verifies, but its issuer and subject are not a pair in the client's spec.authentication.federated. Add the exact pair.")
	reasonCertificateIdentity         = newReason("certificate_identity", ErrInvalidClient, http.StatusUnauthorized, "The client certificate verifies against the pod-client CA (--client-ca-file) but does not name one pod: its only SAN must be the URI spiffe://m2m.dev/ns/<namespace>/sa/<serviceaccount>, as the manager's signer m2m.dev/pod-client writes it. Check what else signs with that CA.")
	reasonCertificateNotAllowed       = newReason("certificate_not_allowed", ErrInvalidClient, http.StatusUnauthorized, "The pod certificate is valid, but its ServiceAccount is not in the client's spec.authentication.podCertificates.serviceAccounts, or is of another namespace. List it there, or run the pod as one listed.")
	reasonNoAuthenticator             = newReason("no_authenticator", ErrInvalidClient, http.StatusUnauthorized, "No authentication method applies to the request: a bug of the token server. Report it.")

	reasonGrantType          = newReason("grant_type", ErrUnsupportedGrantType, http.StatusBadRequest, "grant_type is not client_credentials, the only grant served. Send grant_type=client_credentials.")
	reasonClaimsTooLarge     = newReason("claims_too_large", ErrUnauthorizedClient, http.StatusBadRequest, "The client's spec.tokenClaims are over the size this server issues; its Ready condition says so. Make them smaller.")
	reasonClaimsTemplate     = newReason("claims_template", ErrUnauthorizedClient, http.StatusBadRequest, "A template in the client's spec.tokenClaims (a string with ${) names, as ${name}, no string, number or boolean of its spec.trustedMetadata, or holds a lone $ (admission refuses both on new objects). Fix the claim or the metadata.")
	reasonScopeSyntax        = newReason("scope_syntax", ErrInvalidScope, http.StatusBadRequest, "The scope parameter holds a character no scope may have (a quote, a backslash, a control character). Send space-separated scopes.")
	reasonScopeNotAllowed    = newReason("scope_not_allowed", ErrInvalidScope, http.StatusBadRequest, "A requested scope is not in the client's spec.scopes. Request only those, or add the scope (within what the namespace allows).")
	reasonResourceSyntax     = newReason("resource_syntax", ErrInvalidTarget, http.StatusBadRequest, "A resource parameter is not an absolute URI without a fragment. Send one.")
	reasonAudienceNotAllowed = newReason("audience_not_allowed", ErrInvalidTarget, http.StatusBadRequest, "A requested audience or resource is not in the client's spec.audiences (or, for a client with none, is not the default audience). Request one of those, or add it.")

	reasonDPoPRequired        = newReason("dpop_required", ErrInvalidDPoPProof, http.StatusBadRequest, "The client has spec.dpop.required: true and the token request carried no DPoP header. Make the workload send a DPoP proof (the Go library's token source does with a DPoP key), or set required to false where the namespace allows it.")
	reasonDPoPInvalid         = newReason("dpop_invalid", ErrInvalidDPoPProof, http.StatusBadRequest, "The DPoP proof does not verify: typ dpop+jwt, alg (ES256, EdDSA or RS256) with a public jwk, signature, htm POST, htu one of this server's token URLs (the metadata's token_endpoint), iat within the last minute (clocks within 10 s), a jti of at most 256 bytes; or two DPoP headers. Check the workload's clock and the URL it signs.")
	reasonDPoPReplayed        = newReason("dpop_replayed", ErrInvalidDPoPProof, http.StatusBadRequest, "The DPoP proof (its key and jti) was used before at this replica. Make a new proof, with a new jti, for every request.")
	reasonDPoPReplayFull      = newReason("dpop_replay_full", ErrTemporarilyUnavailable, http.StatusServiceUnavailable, "This replica's replay memory for DPoP proofs holds the share of the client's namespace (or the whole cache is at its bound), so it cannot check that a new proof is not a replay and refuses it. Many proofs of the namespace within a minute cause it; it ends as they age out. Check the namespace's request rate, or raise the token server's memory limit, from which the cache's size derives.")
	reasonDPoPWithCertificate = newReason("dpop_with_certificate", ErrInvalidRequest, http.StatusBadRequest, "The client authenticated with its pod certificate (tls_client_auth) and sent a DPoP proof too. Its tokens are bound to the certificate: send no DPoP header.")
	reasonDPoPNonce           = newReason("dpop_nonce", ErrUseDPoPNonce, http.StatusBadRequest, "The token server requires its nonce in DPoP proofs (--dpop-nonce) and the proof had none, or one over 30 seconds old. Retry with the nonce of the DPoP-Nonce header of the answer; DPoP client libraries do so by themselves.")

	reasonSourceLimited  = newReason("source_limited", ErrTooManyRequests, http.StatusTooManyRequests, "Too many failed authentications came from the request's source address (an IPv4 address or IPv6 /64, behind --trusted-proxies the client's), so its requests are refused before their credentials are checked until Retry-After. Not recorded per client. Fix the workload that fails from that address (the metrics and debug log show its reasons), or raise --failure-rate and --failure-burst.")
	reasonClientLimited  = newReason("client_limited", ErrTooManyRequests, http.StatusTooManyRequests, "The client, authenticated, asked this replica for tokens faster than its issuance limit allows (--issuance-per-minute and --issuance-burst, or its spec.issuanceLimit), so its token requests are refused until Retry-After. Make the workload reuse each token until shortly before it expires (the Go library's token source does) instead of asking per call; if it needs more, raise spec.issuanceLimit within what its namespace allows.")
	reasonNoSigningKey   = newReason("no_signing_key", ErrTemporarilyUnavailable, http.StatusServiceUnavailable, "The token server has no signing key loaded; /readyz says so too. Check that the manager runs and that the token server may read the signing-key Secret.")
	reasonClaimsEncoding = newReason("claims_encoding", ErrTemporarilyUnavailable, http.StatusServiceUnavailable, "The token could not be encoded: a bug of the token server. Report it.")
	reasonSigningFailed  = newReason("signing_failed", ErrTemporarilyUnavailable, http.StatusServiceUnavailable, "The token could not be signed: a bug of the token server, or a broken key. Report it with the token server's log.")
)
