package dpop

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"
)

// claimsAt are valid claims for the token endpoint at now.
func claimsAt(jti string) map[string]any {
	return map[string]any{"htm": "POST", "htu": tokenURL, "iat": now.Unix(), "jti": jti}
}

// withSig is header.claims with a signature of the caller's making.
func withSig(header, claims map[string]any, sig []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// The Ed25519 identity point, a key of small order, verifies the signature R = B, S = 1 on every
// message: anyone could make proofs for its thumbprint without holding any key, so a token bound
// to it would be a bearer token (found by the adversarial review).
func TestAKeyOfSmallOrderThatAnyoneCanSignForIsRefused(t *testing.T) {
	identity := make([]byte, 32)
	identity[0] = 1
	base := make([]byte, 32) // the encoding of the base point B
	base[0] = 0x58
	for i := 1; i < 32; i++ {
		base[i] = 0x66
	}
	sig := append(append([]byte{}, base...), make([]byte, 32)...)
	sig[32] = 1
	if !ed25519.Verify(ed25519.PublicKey(identity), []byte("any message"), sig) {
		t.Fatal("the forged signature does not verify with crypto/ed25519: the test no longer shows the danger")
	}
	header := map[string]any{"typ": Type, "alg": "EdDSA", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(identity)}}
	if p, err := Verify(withSig(header, claimsAt("made-by-anyone"), sig), defaultVerifyOptions); err == nil {
		t.Fatalf("a proof that anyone could make verified, for jkt %s", p.JKT)
	}
}

// One key has one thumbprint, whatever encoding of it the proof carries (base64url padding bits,
// a leading zero in n, e in four bytes): other RFC 7638 implementations would not match another.
func TestOneKeyHasOneThumbprintWhateverItsEncodingInTheProof(t *testing.T) {
	keys(t)
	want, err := Thumbprint(ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	j := jwkOf(t, ecKey.Public())
	x := j["x"].(string)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range alphabet {
		if alphabet[i] == x[len(x)-1] {
			j["x"] = x[:len(x)-1] + string(alphabet[i^1]) // the same bytes: only a padding bit differs
		}
	}
	p, err := Verify(forge(t, ecKey, "ES256", map[string]any{"typ": Type, "alg": "ES256", "jwk": j}, claimsAt("ec")), defaultVerifyOptions)
	if err == nil && p.JKT != want {
		t.Fatalf("an EC key sent with other padding bits got thumbprint %s, not %s", p.JKT, want)
	}
	wantRSA, _ := Thumbprint(rsaKey.Public())
	r := jwkOf(t, rsaKey.Public())
	for sentence, m := range map[string]map[string]any{
		"n with a leading zero byte": {"kty": "RSA", "n": base64.RawURLEncoding.EncodeToString(append([]byte{0}, rsaKey.N.Bytes()...)), "e": r["e"]},
		"e in four bytes":            {"kty": "RSA", "n": r["n"], "e": base64.RawURLEncoding.EncodeToString(big.NewInt(65537).FillBytes(make([]byte, 4)))},
	} {
		p, err := Verify(forge(t, rsaKey, "RS256", map[string]any{"typ": Type, "alg": "RS256", "jwk": m}, claimsAt("rsa")), defaultVerifyOptions)
		if err == nil && p.JKT != wantRSA {
			t.Errorf("an RSA key sent with %s got thumbprint %s, not %s", sentence, p.JKT, wantRSA)
		}
	}
}

// JSON names are case-sensitive: a private member or a header name in another case is not
// taken for what it resembles (encoding/json would match it).
func TestMembersInAnotherCaseAreRefused(t *testing.T) {
	keys(t)
	j := jwkOf(t, ecKey.Public())
	j["D"] = base64.RawURLEncoding.EncodeToString(ecKey.D.Bytes())
	if _, err := Verify(forge(t, ecKey, "ES256", map[string]any{"typ": Type, "alg": "ES256", "jwk": j}, claimsAt("d")), defaultVerifyOptions); err == nil {
		t.Error("a jwk carrying the private key as D was accepted")
	}
	if _, err := Verify(forge(t, ecKey, "ES256", map[string]any{"TYP": Type, "ALG": "ES256", "JWK": jwkOf(t, ecKey.Public())}, claimsAt("h")), defaultVerifyOptions); err == nil {
		t.Error("a header of TYP, ALG and JWK was accepted")
	}
}
