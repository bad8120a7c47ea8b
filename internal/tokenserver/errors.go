package tokenserver

import (
	"encoding/json"
	"net/http"
)

// OAuth 2.0 error codes (RFC 6749 §5.2, RFC 8707 §2).
const (
	ErrInvalidRequest       = "invalid_request"
	ErrInvalidClient        = "invalid_client"
	ErrUnsupportedGrantType = "unsupported_grant_type"
	// ErrUnauthorizedClient: the client is authenticated, but may not use the grant as it is
	// configured (its tokenClaims are over the size this server issues).
	ErrUnauthorizedClient = "unauthorized_client"
	ErrInvalidScope       = "invalid_scope"
	ErrInvalidTarget      = "invalid_target"
	// ErrTemporarilyUnavailable is the answer while the server has no signing key: a state of
	// the server, not of the request.
	ErrTemporarilyUnavailable = "temporarily_unavailable"
	// ErrTooManyRequests answers a source over its limit (429, RFC 6585). No RFC names an error
	// for it at the token endpoint; slow_down is the device flow's (RFC 8628) and
	// temporarily_unavailable says the server is the cause. Auth0 answers this one.
	ErrTooManyRequests = "too_many_requests"
)

// oauthError is an error response. Description is for the caller and never says more than the
// request itself shows: in particular, never whether a client ID exists.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	status      int
	// reason is the finer cause, for metrics, logs and the client's owner only.
	reason *reason
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

// newError is the one place an oauthError is built: its code and status are the reason's.
func newError(r *reason, description string) *oauthError {
	return &oauthError{Code: r.code, Description: description, status: r.status, reason: r}
}

// invalidClient is the one answer for an unknown client, a wrong secret and a disabled client.
func invalidClient(r *reason) *oauthError {
	return newError(r, "client authentication failed")
}

// noStore marks a response as one that no cache may keep (RFC 6749 §5.1).
// Header values set on every token response. They are assigned, not Set, which would allocate
// a slice per request; net/http never writes into a value's slice, and Header.Add, the one way to
// extend it, copies a slice that is full.
var (
	noStoreValue  = []string{"no-store"}
	noCacheValue  = []string{"no-cache"}
	jsonTypeValue = []string{"application/json;charset=UTF-8"}
)

func noStore(w http.ResponseWriter) {
	h := w.Header()
	h["Cache-Control"] = noStoreValue
	h["Pragma"] = noCacheValue
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = jsonTypeValue
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *oauthError) {
	noStore(w)
	if e.status == http.StatusUnauthorized {
		// RFC 6749 §5.2 requires it when the client used Basic; RFC 9110 §15.5.2 on every 401.
		w.Header().Set("WWW-Authenticate", `Basic realm="m2m", charset="UTF-8"`)
	}
	writeJSON(w, e.status, e)
}

// claimsTooLarge refuses a client whose tokenClaims are over m2mv1alpha1.MaxTokenClaimsBytes.
func claimsTooLarge() *oauthError {
	return newError(reasonClaimsTooLarge,
		"the client's tokenClaims are over the size this server issues; its M2MClient's Ready condition says so")
}
