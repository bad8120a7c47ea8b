package tokenserver

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// By default the token counters have one series per namespace, however many clients ask, and a
// caller who is not authenticated adds none; per-client series are an option.
func TestTokenCountersAreByNamespaceUnlessPerClientMetricsAreAskedFor(t *testing.T) {
	for _, perClient := range []bool{false, true} {
		reg := prometheus.NewRegistry()
		_, keys := staticKeys(t, signingkeys.ES256)
		clients := mapClients{}
		for _, id := range []string{"m2m-a", "m2m-b", "m2m-c"} {
			clients[id] = testClient(id, goodSecret)
		}
		s, err := New(Config{IssuerURL: testIssuer, Clients: clients, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Registry: reg, PerClientMetrics: perClient})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s.Handler())
		f := &fixture{srv: srv}
		for id := range clients {
			if code, body := tokenFor(t, f, id, goodSecret); code != 200 {
				t.Fatalf("%s: %d %v", id, code, body)
			}
		}
		for i := range 5 {
			tokenFor(t, f, "m2m-made-up-"+strings.Repeat("x", i), "guess")
		}
		srv.Close()
		issued := testutil.CollectAndCount(reg, "m2m_tokens_issued_total")
		failed := testutil.CollectAndCount(reg, "m2m_token_failures_total")
		want := 1 // the namespace "ns" of every test client
		if perClient {
			want = 3
		}
		if issued != want || failed != 1 {
			t.Errorf("per-client %v: %d issued series (want %d), %d failure series (want 1: made-up IDs add none)", perClient, issued, want, failed)
		}
	}
}
