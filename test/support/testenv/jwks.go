package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// JWKS fetches issuer's JWKS over HTTP, as any verifier would.
func JWKS(t testing.TB, issuer string) jwk.Set {
	t.Helper()
	resp, err := http.Get(issuer + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jwk.Set
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("the JWKS of %s: %v", issuer, err)
	}
	return set
}

// Keyfunc finds a token's key in set by kid, and refuses a token whose alg is not its key's.
func Keyfunc(set jwk.Set) jwt.Keyfunc {
	return func(tok *jwt.Token) (any, error) {
		for _, k := range set.Keys {
			if k.KeyID == tok.Header["kid"] {
				if k.Algorithm != tok.Method.Alg() {
					return nil, fmt.Errorf("alg %s does not match the key's %s", tok.Method.Alg(), k.Algorithm)
				}
				return k.PublicKey()
			}
		}
		return nil, fmt.Errorf("kid %v is not in the JWKS", tok.Header["kid"])
	}
}
