package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"testing"
	"time"
)

// BenchmarkVerify verifies ES256 proofs of one key, made before the timer: a client's proofs
// repeat the header (typ, alg, jwk) and differ in their claims.
func BenchmarkVerify(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	const u = "https://auth.example.com/oauth2/token"
	proofs := make([]string, 1024)
	for i := range proofs {
		if proofs[i], err = NewProof(key, http.MethodPost, u, ProofOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	o := VerifyOptions{Method: http.MethodPost, URLs: []string{u, "https://m2m-token-server.m2m-system.svc/oauth2/token"}, Now: time.Now()}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Verify(proofs[i%len(proofs)], o); err != nil {
			b.Fatal(err)
		}
	}
}
