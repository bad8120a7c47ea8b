package tokenserver

import (
	"encoding/json"
	"time"
)

// accessClaims are the claims of an RFC 9068 access token. Encoding a struct, rather than a
// map, spares the reflection and key sorting of a map on every token: a measurable share of the
// token endpoint's time.
type accessClaims struct {
	Issuer   string `json:"iss"`
	Subject  string `json:"sub"`
	Audience any    `json:"aud"`
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	IssuedAt int64  `json:"iat"`
	NotBef   int64  `json:"nbf"`
	Expires  int64  `json:"exp"`
	ID       string `json:"jti"`
	// Confirmation binds a token to a DPoP key (RFC 9449 §6.1) or to a client certificate (RFC
	// 8705 §3.1); nil for a bearer token.
	Confirmation *confirmation `json:"cnf,omitempty"`
	// extra is the client's tokenClaims as a JSON object. The API refuses registered claim
	// names in it, so it never repeats a field above.
	extra []byte
}

// confirmation is the cnf claim of a bound token: one member, never both.
type confirmation struct {
	JKT string `json:"jkt,omitempty"`
	// X5T is the base64url SHA-256 of the client certificate's DER.
	X5T string `json:"x5t#S256,omitempty"`
	// until is the bound certificate's NotAfter: a token bound to it expires no later.
	until time.Time
}

// plainClaims has accessClaims' fields and none of its methods.
type plainClaims accessClaims

// MarshalJSON writes the registered claims, then the client's own.
func (c accessClaims) MarshalJSON() ([]byte, error) {
	out, err := json.Marshal(plainClaims(c))
	if err != nil || len(c.extra) <= 2 { // "{}"
		return out, err
	}
	out = append(out[:len(out)-1], ',')
	return append(out, c.extra[1:]...), nil
}
