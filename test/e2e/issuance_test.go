package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A token server with the issuance limit reads each client's spec.issuanceLimit from the API
// server through its cache: a client with an override gets its burst, one without gets the
// server's, each then 429 too_many_requests; and a changed override reaches the token server
// without a restart.
func TestATokenServerWithTheIssuanceLimitAppliesEachClientsOverrideFromItsCache(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ns := namespace(t)
	fast := billingClient(ns, "fast")
	fast.Spec.IssuanceLimit = &m2mv1alpha1.IssuanceLimit{PerMinute: 1, Burst: 4}
	fastSecret := readyClient(t, fast)
	plainSecret := readyClient(t, billingClient(ns, "plain"))

	// A second token server, watching this namespace only, with a limit of 2 at once and one a
	// minute: no token comes back within the test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limited := "http://" + ln.Addr().String()
	done := make(chan error, 1)
	go func() {
		done <- tokenserver.Run(ctx, env.Config, tokenserver.Options{
			IssuerURL: limited, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret, WatchNamespaces: []string{ns},
			IssuanceLimit: tokenserver.IssuanceLimit{PerMinute: 1, Burst: 2},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("token server: %v", err)
		}
	})
	if err := testenv.WaitOK(limited+"/readyz", wait); err != nil {
		t.Fatal(err)
	}
	ask := func(s map[string][]byte) testenv.TokenResponse {
		t.Helper()
		resp, err := testenv.ClientCredentials(context.Background(), http.DefaultClient, limited,
			string(s[m2mv1alpha1.SecretKeyClientID]), string(s[m2mv1alpha1.SecretKeyClientSecret]))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, tc := range []struct {
		who    string
		secret map[string][]byte
		burst  int
	}{{"the client with an override of 4", fastSecret.Data, 4}, {"the client with the server's limit of 2", plainSecret.Data, 2}} {
		for i := range tc.burst {
			if resp := ask(tc.secret); resp.Status != http.StatusOK {
				t.Fatalf("%s, token %d: %d %s", tc.who, i+1, resp.Status, resp.Raw)
			}
		}
		if resp := ask(tc.secret); resp.Status != http.StatusTooManyRequests || resp.Error != tokenserver.ErrTooManyRequests {
			t.Fatalf("%s, over its limit: %d %s, want 429 %s", tc.who, resp.Status, resp.Raw, tokenserver.ErrTooManyRequests)
		}
	}

	// Raised to a million a minute, the override refills the empty bucket at once.
	base := fast.DeepCopy()
	fast.Spec.IssuanceLimit.PerMinute = 1000000
	if err := env.Client.Patch(ctx, fast, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if resp := ask(fastSecret.Data); resp.Status != http.StatusOK {
			return fmt.Errorf("after the raise: %d %s", resp.Status, resp.Raw)
		}
		return nil
	})
}
