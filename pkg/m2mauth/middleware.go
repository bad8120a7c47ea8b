package m2mauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

type claimsKey struct{}

// ClaimsFromContext returns the claims Middleware put in a request's context.
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok
}

// Middleware authenticates the access token of every request with v and opts, as
// AuthenticateRequest does (Authorization: Bearer, or DPoP with a proof), and passes the request
// on with the claims in its context (ClaimsFromContext). It answers RFC 6750 errors: 401 with
// WWW-Authenticate for a missing or invalid token, 403 insufficient_scope for a token that lacks
// a required scope; and RFC 9449 §7.1 ones: 401 with a DPoP challenge whose error is
// invalid_dpop_proof, or use_dpop_nonce with a DPoP-Nonce header, or none for a bearer token on a
// route that requires DPoP. A token sent with the DPoP scheme is refused in the DPoP scheme.
func Middleware(v *Verifier, opts ...AuthOption) func(http.Handler) http.Handler {
	var cfg authConfig
	for _, o := range opts {
		o(&cfg)
	}
	scope := strings.Join(cfg.scopes, " ")
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
			dpopScheme := strings.EqualFold(scheme, "DPoP")
			if !ok || !strings.EqualFold(scheme, "Bearer") && !dpopScheme || strings.TrimSpace(token) == "" {
				// RFC 6750 §3.1: no error code when the request carried no credentials.
				if cfg.requireDPoP {
					w.Header().Set("WWW-Authenticate", dpopChallenge(""))
				} else {
					w.Header().Set("WWW-Authenticate", `Bearer realm="`+v.issuer+`"`)
				}
				http.Error(w, "an access token is required (Authorization: Bearer or DPoP)", http.StatusUnauthorized)
				return
			}
			claims, err := v.AuthenticateRequest(r, opts...)
			challenge := `Bearer realm="` + v.issuer + `", `
			if dpopScheme {
				challenge = dpopChallenge("") + ", "
			}
			switch {
			case err != nil && v.writeDPoPRefusal(w, err):
				return
			case errors.Is(err, ErrMissingScope):
				w.Header().Set("WWW-Authenticate", challenge+`error="insufficient_scope", scope="`+scope+`"`)
				http.Error(w, "the token lacks a required scope", http.StatusForbidden)
				return
			case errors.Is(err, ErrDPoPReplayFull):
				// Not the caller's fault, and it ends as proofs age out.
				w.Header().Set("Retry-After", "5")
				http.Error(w, "DPoP proofs cannot be checked now", http.StatusServiceUnavailable)
				return
			case errors.Is(err, ErrJWKS), errors.Is(err, ErrRevocationUnavailable):
				// The token may be fine; the keys or the revocation list are unavailable. Not the
				// caller's fault.
				http.Error(w, "token verification is unavailable", http.StatusServiceUnavailable)
				return
			case err != nil:
				w.Header().Set("WWW-Authenticate", challenge+`error="invalid_token"`)
				http.Error(w, "the token is invalid", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
		})
	}
}
