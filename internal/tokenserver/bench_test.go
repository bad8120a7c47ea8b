package tokenserver

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
	"k8s.io/utils/clock"
)

// BenchmarkSignAccessToken is the signing-only ceiling: building and signing the same claims the
// token endpoint signs, with nothing else. `make bench-token` runs it on all cores.
func BenchmarkSignAccessToken(b *testing.B) {
	f := newFixtureServer(b, IssuanceLimit{})
	c := testClient(goodID, goodSecret)
	scopes := []string{"read:invoices", "write:payments"}
	aud := []string{"https://payments.example.com"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, bad := f.sign(c, scopes, aud, nil); bad != nil {
				b.Fatal(bad)
			}
		}
	})
}

// BenchmarkTokenEndpoint is the whole pipeline in process, without a network: parse,
// authenticate, check, sign, write.
func BenchmarkTokenEndpoint(b *testing.B) {
	benchmarkToken(b, IssuanceLimit{}, http.StatusOK, tokenForm...)
}

// BenchmarkTokenEndpointWithTheIssuanceLimit is BenchmarkTokenEndpoint with the issuance limit
// on, so high that it never refuses: what taking from the client's bucket costs.
func BenchmarkTokenEndpointWithTheIssuanceLimit(b *testing.B) {
	benchmarkToken(b, IssuanceLimit{PerMinute: 1 << 40, Burst: 1 << 40}, http.StatusOK, tokenForm...)
}

// tokenForm is the request of BenchmarkTokenEndpoint.
var tokenForm = []string{"grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret, "scope", "read:invoices write:payments", "audience", "https://payments.example.com"}

// BenchmarkRefusedRequest is a wrong secret for a known client, in process: the path a caller
// who floods refusals takes, with the count, the debug-log check and the refusal memory.
func BenchmarkRefusedRequest(b *testing.B) {
	benchmarkToken(b, IssuanceLimit{}, http.StatusUnauthorized, "grant_type", "client_credentials", "client_id", goodID, "client_secret", "a-wrong-secret-0123456789abcdefghijklmnopqrstuv")
}

// benchmarkToken sends the form of kv to a server with limit, in parallel, each answered with
// code.
func benchmarkToken(b *testing.B, limit IssuanceLimit, code int, kv ...string) {
	s := newFixtureServer(b, limit)
	h := s.Handler()
	body := formBody(kv...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
			r.Header.Set("Content-Type", form)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != code {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}

// BenchmarkTokenEndpointWithDPoP is BenchmarkTokenEndpoint with a fresh DPoP proof (new jti,
// P-256 key) on every request. The benchmark's goroutines make the proofs, so the figure includes
// making one, as a client would (BenchmarkMakeDPoPProof alone), besides verifying it, binding the
// token and recording the jti in the replay cache. The clock is real, so that the cache holds a
// minute of proofs and sweeps the older ones, as in service.
func BenchmarkTokenEndpointWithDPoP(b *testing.B) {
	_, keys := staticKeys(b, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: testClient(goodID, goodSecret)}, Keys: keys, Clock: clock.RealClock{}})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	body := formBody(tokenForm...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := proofKey(b)
		for pb.Next() {
			p, err := dpop.NewProof(key, http.MethodPost, testIssuer+"/oauth2/token", dpop.ProofOptions{})
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
			r.Header.Set("Content-Type", form)
			r.Header.Set("DPoP", p)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}

// BenchmarkTokenEndpointWithDPoPProofsMadeAhead is the server's share of
// BenchmarkTokenEndpointWithDPoP: the proofs, one per request, are made before the timer starts,
// by a P-256 key (ES256) and by an Ed25519 key (EdDSA).
func BenchmarkTokenEndpointWithDPoPProofsMadeAhead(b *testing.B) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for alg, key := range map[string]crypto.Signer{"ES256": proofKey(b), "EdDSA": edKey} {
		b.Run(alg, func(b *testing.B) {
			_, keys := staticKeys(b, signingkeys.ES256)
			s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: testClient(goodID, goodSecret)}, Keys: keys, Clock: clock.RealClock{}})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			body := formBody(tokenForm...)
			proofs := make([]string, b.N)
			for i := range proofs {
				if proofs[i], err = dpop.NewProof(key, http.MethodPost, testIssuer+"/oauth2/token", dpop.ProofOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
					r.Header.Set("Content-Type", form)
					r.Header.Set("DPoP", proofs[next.Add(1)-1])
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Fatal(w.Code, w.Body.String())
					}
				}
			})
		})
	}
}

// BenchmarkMakeDPoPProof is what making a proof costs, the client's share of
// BenchmarkTokenEndpointWithDPoP.
func BenchmarkMakeDPoPProof(b *testing.B) {
	key := proofKey(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dpop.NewProof(key, http.MethodPost, testIssuer+"/oauth2/token", dpop.ProofOptions{Now: t0}); err != nil {
			b.Fatal(err)
		}
	}
}
