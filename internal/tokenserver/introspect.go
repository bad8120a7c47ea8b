package tokenserver

import (
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// introspect answers RFC 7662 requests from any authenticated M2MClient.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	req, caller, ok := s.authenticated(w, r, false)
	if !ok {
		return
	}
	if req.token == "" {
		s.fail(w, r, newError(reasonNoToken, "the token parameter is required"), req, caller)
		return
	}
	noStore(w)
	claims, ok := s.verify(req.token)
	if !ok {
		writeJSON(w, http.StatusOK, map[string]bool{"active": false})
		return
	}
	id, _ := claims["client_id"].(string)
	client, found := s.lookup(id, s.cfg.Keys.current())
	// The revocation list covers what the client cannot: spec.revokeTokensIssuedBefore, and the
	// disable or deletion recorded on the binding of a client enabled or created again.
	if !found || client.Spec.Disabled || s.revocationList.revoked(id, claims) {
		writeJSON(w, http.StatusOK, map[string]bool{"active": false})
		return
	}
	out := map[string]any{"active": true, "token_type": "Bearer"}
	if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != nil {
		// RFC 9449 §6.2: the binding goes with the answer, or a resource server that introspects
		// would take a stolen bound token for a bearer token. A certificate-bound token stays
		// Bearer (RFC 8705 §3.2): its cnf, copied below, carries the binding.
		out["token_type"] = "DPoP"
	}
	for _, k := range []string{"scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "cnf"} {
		if v, ok := claims[k]; ok {
			out[k] = v
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// verify checks a token this server issued: a known key of the token's algorithm, typ at+jwt,
// this issuer (or, during a move, the previous one: those tokens are this server's too, signed
// by its keys, and stay valid until they expire), and the time claims.
func (s *Server) verify(raw string) (jwt.MapClaims, bool) {
	st := s.cfg.Keys.current()
	if st == nil {
		return nil, false
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{string(signingkeys.ES256), string(signingkeys.RS256), string(signingkeys.EdDSA)}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.cfg.Clock.Now),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, "at+jwt") {
			return nil, jwt.ErrTokenUnverifiable
		}
		kid, _ := t.Header["kid"].(string)
		k := st.set.Find(kid)
		if k == nil || t.Method.Alg() != string(k.Algorithm) {
			return nil, jwt.ErrTokenUnverifiable
		}
		return k.Signer().Public(), nil
	})
	if err != nil {
		return nil, false
	}
	iss, _ := claims.GetIssuer()
	return claims, iss == s.cfg.IssuerURL || (iss != "" && iss == s.cfg.PreviousIssuerURL)
}
