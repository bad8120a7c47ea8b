package tokenserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
			if _, _, bad := f.sign(c, scopes, aud, ""); bad != nil {
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
