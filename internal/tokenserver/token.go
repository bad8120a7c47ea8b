package tokenserver

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// tokenResponse is the successful answer (RFC 6749 §5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// token is the pipeline: parse, authenticate the client, take from its issuance limit, check
// grant, scope and audience, sign, write.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// A client certificate is verified at the handshake only, against the CA and the clock
		// of then: one connection per request keeps an expired certificate, or one of a CA
		// since replaced, from getting tokens over a connection kept alive.
		w.Header().Set("Connection", "close")
	}
	req, client, ok := s.authenticated(w, r, true)
	if !ok {
		return
	}
	// Only now: a limit keyed by a client before it proves who it is would let anyone who
	// names a client ID lock it out, and tell known IDs from unknown ones.
	if wait, over := s.issuance.take(client); over {
		s.refuseClient(w, r, wait, req, client)
		return
	}
	// The client's bucket refilled between its authentication and now: its assertion's jti,
	// left unkept for a refusal, must be new all the same.
	if req.recordJTI != nil && !req.recordJTI() {
		s.sources.failed(s.cfg.ClientAddresses.of(r))
		s.fail(w, r, invalidClient(reasonAssertionInvalid), req, client)
		return
	}
	if req.certificateThumbprint != "" && len(r.Header.Values("DPoP")) > 0 {
		// One binding per token: the certificate's, which authenticated the client. Binding
		// both would give resource servers two checks to get right, and a proof adds nothing to
		// a key that the TLS handshake has already proven.
		s.fail(w, r, newError(reasonDPoPWithCertificate, "a client that authenticates with its certificate gets tokens bound to it: send no DPoP header"), req, client)
		return
	}
	jkt, bad := s.dpopBinding(w, r, client)
	if bad != nil {
		s.fail(w, r, bad, req, client)
		return
	}
	if req.grantType == "" {
		s.fail(w, r, newError(reasonNoGrantType, "the grant_type parameter is required"), req, client)
		return
	}
	if req.grantType != GrantClientCredentials {
		s.fail(w, r, newError(reasonGrantType, "only the client_credentials grant is supported"), req, client)
		return
	}
	if client.claims == claimsOverBound {
		s.fail(w, r, claimsTooLarge(), req, client)
		return
	}
	if client.claims == claimsUnrendered {
		s.fail(w, r, newError(reasonClaimsTemplate, "a templated value of the client's tokenClaims does not render: it names no string, number or boolean of its trustedMetadata, or holds a lone $ or an unclosed ${"), req, client)
		return
	}
	scopes, bad := grantScopes(client, req)
	if bad != nil {
		s.fail(w, r, bad, req, client)
		return
	}
	audience, bad := s.audience(client, req)
	if bad != nil {
		s.fail(w, r, bad, req, client)
		return
	}
	var cnf *confirmation
	switch {
	case jkt != "":
		cnf = &confirmation{JKT: jkt}
	case req.certificateThumbprint != "":
		cnf = &confirmation{X5T: req.certificateThumbprint, until: req.peerCertificate.NotAfter}
	}
	signed, ttl, bad := s.sign(client, scopes, audience, cnf)
	if bad != nil {
		s.fail(w, r, bad, req, client)
		return
	}
	s.metrics.issued.WithLabelValues(s.metrics.labels(client)...).Inc()
	noStore(w)
	tokenType := "Bearer"
	if jkt != "" {
		tokenType = "DPoP"
	}
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: signed, TokenType: tokenType, ExpiresIn: int64(ttl / time.Second), Scope: strings.Join(scopes, " ")})
}

// grantScopes returns the requested scopes when the client may have all of them, or all of the
// client's scopes when none were requested.
func grantScopes(c *CachedClient, req *tokenRequest) ([]string, *oauthError) {
	if !req.scopeGiven {
		out := make([]string, 0, len(c.Spec.Scopes))
		for _, s := range c.Spec.Scopes {
			out = append(out, string(s))
		}
		return out, nil
	}
	for _, want := range req.scopes {
		if !slices.Contains(c.Spec.Scopes, m2mv1alpha1.Scope(want)) {
			return nil, newError(reasonScopeNotAllowed, "the client may not request the scope "+want)
		}
	}
	return req.scopes, nil
}

// allowedAudiences are the audiences a client may have in its tokens: its spec.audiences, or the
// server's default audience when it names none.
func (s *Server) allowedAudiences(c *CachedClient) []string {
	if len(c.Spec.Audiences) == 0 {
		return []string{s.cfg.DefaultAudience}
	}
	out := make([]string, 0, len(c.Spec.Audiences))
	for _, a := range c.Spec.Audiences {
		out = append(out, string(a))
	}
	return out
}

// audience returns the token's audiences: the requested ones (audience and resource parameters),
// each of which the client must be allowed; else all that the client is allowed.
func (s *Server) audience(c *CachedClient, req *tokenRequest) ([]string, *oauthError) {
	for _, r := range req.resources {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
			return nil, newError(reasonResourceSyntax, "a resource must be an absolute URI without a fragment")
		}
	}
	allowed := s.allowedAudiences(c)
	requested := append(slices.Clone(req.audiences), req.resources...)
	if len(requested) == 0 {
		return allowed, nil
	}
	var out []string
	for _, a := range requested {
		if !slices.Contains(allowed, a) {
			return nil, newError(reasonAudienceNotAllowed, "the client may not request the audience "+a)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// customClaims are the client's tokenClaims without any name that equals a reserved claim
// ignoring case. The API refuses those at admission; objects stored before that rule may still
// hold them, and decoders that match names ignoring case would read them as the real claims.
func customClaims(claims m2mv1alpha1.TokenClaims) m2mv1alpha1.TokenClaims {
	for name := range claims {
		if m2mv1alpha1.IsReservedClaim(name) {
			out := make(m2mv1alpha1.TokenClaims, len(claims))
			for n, v := range claims {
				if !m2mv1alpha1.IsReservedClaim(n) {
					out[n] = v
				}
			}
			return out
		}
	}
	return claims
}

// sign issues the RFC 9068 access token, bound as cnf says (nil: a bearer token).
func (s *Server) sign(c *CachedClient, scopes, audience []string, cnf *confirmation) (string, time.Duration, *oauthError) {
	st := s.cfg.Keys.current()
	if st == nil || st.active == nil {
		return "", 0, newError(reasonNoSigningKey, "no signing key is loaded yet")
	}
	ttl := m2mv1alpha1.DefaultTokenTTL
	if c.Spec.TokenTTL != nil {
		ttl = c.Spec.TokenTTL.Duration
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti) // crypto/rand.Read never fails (Go 1.24+)
	now := s.cfg.Clock.Now().Truncate(time.Second)
	if cnf != nil && !cnf.until.IsZero() && now.Add(ttl).After(cnf.until) {
		// A token bound to a certificate is worth nothing past it: the key's holder cannot
		// present it over TLS any more.
		ttl = max(cnf.until.Truncate(time.Second).Sub(now), time.Second)
	}
	claims := accessClaims{
		Issuer:       s.cfg.IssuerURL,
		Subject:      c.Status.ClientID,
		ClientID:     c.Status.ClientID,
		Scope:        strings.Join(scopes, " "),
		IssuedAt:     now.Unix(),
		NotBef:       now.Unix(),
		Expires:      now.Add(ttl).Unix(),
		ID:           base64.RawURLEncoding.EncodeToString(jti),
		Confirmation: cnf,
	}
	if len(audience) == 1 {
		claims.Audience = audience[0]
	} else {
		claims.Audience = audience
	}
	if extra := customClaims(c.Spec.TokenClaims); len(extra) > 0 {
		raw, err := json.Marshal(extra)
		if err != nil {
			return "", 0, newError(reasonClaimsEncoding, "the client's tokenClaims could not be encoded")
		}
		if len(raw) > m2mv1alpha1.MaxTokenClaimsBytes {
			return "", 0, claimsTooLarge()
		}
		claims.extra = raw
	}

	payload, err := json.Marshal(claims)
	if err != nil {
		return "", 0, newError(reasonClaimsEncoding, "the token could not be encoded")
	}
	// The header is the same for every token of a key, so it is encoded once per key set.
	signingInput := st.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := st.active.Method().Sign(signingInput, st.active.SigningKey())
	if err != nil {
		return "", 0, newError(reasonSigningFailed, "the token could not be signed")
	}
	signed := signingInput + "." + base64.RawURLEncoding.EncodeToString(sig)
	return signed, ttl, nil
}
