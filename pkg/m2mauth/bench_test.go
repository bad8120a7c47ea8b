package m2mauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
	"github.com/m2m-dev/m2m-operator/test/support/podcert"
)

// BenchmarkAuthenticate and BenchmarkRawVerify run on the same token: the library's whole check
// against golang-jwt verifying the signature with the key in hand and nothing else.
func BenchmarkAuthenticate(b *testing.B) { benchmarkAuthenticate(b, signingkeys.ES256) }

// BenchmarkAuthenticateByAlgorithm is BenchmarkAuthenticate with each algorithm the manager can
// sign with: what a resource server pays for each.
func BenchmarkAuthenticateByAlgorithm(b *testing.B) {
	for _, alg := range signingkeys.Algorithms {
		b.Run(string(alg), func(b *testing.B) { benchmarkAuthenticate(b, alg) })
	}
}

// benchmarkAuthenticate checks a token signed with a key of alg, its JWKS served, on one core.
func benchmarkAuthenticate(b *testing.B, alg signingkeys.Algorithm) {
	key := genKey(b, alg)
	srv := newJWKSServer(b, key)
	v := newTestVerifier(b, srv)
	token := mint(b, key, goodClaims(srv.URL), nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Authenticate(ctx, token, RequiredScopes("read:users"), RequiredAudience("https://api.example.com")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawVerify(b *testing.B) {
	ec := genKey(b, signingkeys.ES256)
	token := mint(b, ec, goodClaims("https://issuer"), nil)
	pub := ec.Signer().Public()
	parser := jwt.NewParser(jwt.WithTimeFunc(func() time.Time { return t0.Add(time.Minute) }))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parser.Parse(token, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateRequestBearer and BenchmarkAuthenticateRequestDPoP run AuthenticateRequest
// on the same token shape (the DPoP one has a cnf claim more): an unbound token as a bearer
// token, and a bound one with a fresh proof per request, which costs the proof's verification
// and a replay-cache entry. Proofs are made in batches with the timer stopped.
func BenchmarkAuthenticateRequestBearer(b *testing.B) {
	ec := genKey(b, signingkeys.ES256)
	srv := newJWKSServer(b, ec)
	v := newTestVerifier(b, srv)
	token := mint(b, ec, goodClaims(srv.URL), nil)
	r := httptest.NewRequest(http.MethodGet, "http://api.example.com/users", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.AuthenticateRequest(r, RequiredScopes("read:users")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateRequestDPoP(b *testing.B) {
	ec := genKey(b, signingkeys.ES256)
	srv := newJWKSServer(b, ec)
	v := newTestVerifier(b, srv)
	key := newDPoPKey(b)
	token := mint(b, ec, boundClaims(b, srv.URL, key), nil)
	const url = "http://api.example.com/users"
	r := httptest.NewRequest(http.MethodGet, url, nil)
	r.Header.Set("Authorization", "DPoP "+token)
	const batch = 1000
	proofs := make([]string, 0, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(proofs) == 0 {
			b.StopTimer()
			for range batch {
				proofs = append(proofs, proofFor(b, key, http.MethodGet, url, dpop.ProofOptions{AccessToken: token}))
			}
			b.StartTimer()
		}
		r.Header.Set("DPoP", proofs[len(proofs)-1])
		proofs = proofs[:len(proofs)-1]
		if _, err := v.AuthenticateRequest(r, RequiredScopes("read:users")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateRequestCertificateBound is BenchmarkAuthenticateRequestBearer on a token
// bound to a pod certificate (cnf x5t#S256), sent as a bearer token over a connection whose
// verified client certificate it is: what the binding adds to the check, the certificate's
// SHA-256 and a comparison. The TLS handshake that verified the certificate is the server's, not
// counted here.
func BenchmarkAuthenticateRequestCertificateBound(b *testing.B) {
	ec := genKey(b, signingkeys.ES256)
	srv := newJWKSServer(b, ec)
	v := newTestVerifier(b, srv)
	ca := podcert.NewCA(b)
	leaf := ca.Issue(b, "team-a", "worker")
	token := mint(b, ec, certClaims(srv.URL, leaf), nil)
	r := httptest.NewRequest(http.MethodGet, "https://api.example.com/users", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf.Cert}, VerifiedChains: [][]*x509.Certificate{{leaf.Cert, ca.Cert}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.AuthenticateRequest(r, RequiredScopes("read:users")); err != nil {
			b.Fatal(err)
		}
	}
}
