package jwk

import (
	"encoding/json"
	"testing"
)

// FuzzKey feeds arbitrary JWKs to the parser and the thumbprint: they must never panic, and a key
// that parses has a thumbprint and survives FromPublicKey with the same one.
func FuzzKey(f *testing.F) {
	f.Add(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`)
	f.Add(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`)
	f.Add(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`)
	f.Add(`{"kty":"EC","crv":"P-256","x":"","y":""}`)
	f.Fuzz(func(t *testing.T, raw string) {
		var k Key
		if json.Unmarshal([]byte(raw), &k) != nil {
			return
		}
		_, _ = k.Thumbprint()
		pub, err := k.PublicKey()
		if err != nil {
			return
		}
		back, err := FromPublicKey(pub)
		if err != nil {
			t.Fatalf("a key that parses does not convert back: %v", err)
		}
		if a, b := mustThumbprint(t, k), mustThumbprint(t, back); a != b {
			t.Fatalf("the thumbprint changed from %s to %s through FromPublicKey", a, b)
		}
	})
}

func mustThumbprint(t *testing.T, k Key) string {
	t.Helper()
	tp, err := k.Thumbprint()
	if err != nil {
		t.Fatalf("a key that parses has no thumbprint: %v", err)
	}
	return tp
}

// FuzzParsePrivateKeyPEM feeds arbitrary bytes as a PEM private key: never a panic.
func FuzzParsePrivateKeyPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("not pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = ParsePrivateKeyPEM(data)
	})
}
