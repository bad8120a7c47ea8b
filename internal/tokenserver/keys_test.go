package tokenserver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// A signing-key Secret that does not parse is counted, in m2m_signing_key_load_errors_total,
// so that an operator sees it while the keys loaded before keep signing.
func TestASigningKeySecretThatDoesNotParseIsCountedInTheMetrics(t *testing.T) {
	ref := signingkeys.DefaultSecret
	cs := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, ResourceVersion: "7"},
		Data:       map[string][]byte{signingkeys.DataKey: []byte("not a key set")},
	})
	keys := NewSecretKeys(cs, ref, clocktesting.NewFakePassiveClock(t0), signingkeys.DefaultRetention)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go keys.Run(ctx)
	if err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		return keys.LoadErrors() > 0, nil
	}); err != nil {
		t.Fatal("the Secret was never loaded:", err)
	}

	reg := prometheus.NewRegistry()
	srv, err := New(Config{IssuerURL: testIssuer, Keys: keys, Registry: reg, KeyLoadErrors: keys.LoadErrors})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.MetricsHandler())
	defer hs.Close()
	resp, err := http.Get(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "m2m_signing_key_load_errors_total 1\n") {
		t.Fatalf("the metrics lack one load error:\n%s", body)
	}
	if keys.Loaded() {
		t.Fatal("a Secret that does not parse loaded keys")
	}
}

// A Secret version that changes the signing keys and not the status keys keeps the status key
// set as it was loaded, so the MAC verdicts memoized under it still hold; new status keys are a
// new set.
func TestASigningKeyChangeKeepsTheStatusKeySetAndItsVerdicts(t *testing.T) {
	ref := signingkeys.DefaultSecret
	keys := NewSecretKeys(fake.NewClientset(), ref, clocktesting.NewFakePassiveClock(t0), signingkeys.DefaultRetention)
	secret := func(rv string, signing []*signingkeys.Key, status *statusmac.Set) *corev1.Secret {
		t.Helper()
		set, err := (&signingkeys.Set{Keys: signing}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		st, err := status.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, ResourceVersion: rv}, Data: map[string][]byte{signingkeys.DataKey: set, statusmac.DataKey: st}}
	}
	first, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	next, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateNext, t0)
	if err != nil {
		t.Fatal(err)
	}
	statusKey, err := statusmac.Generate(statusmac.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	status := &statusmac.Set{Keys: []*statusmac.Key{statusKey}}
	ctx := context.Background()

	keys.load(ctx, secret("1", []*signingkeys.Key{first}, status))
	loaded := keys.current().status
	client := NewCachedClient(testClient(goodID, goodSecret))
	verdicts := client.verdictsUnder(loaded)

	keys.load(ctx, secret("2", []*signingkeys.Key{first, next}, status))
	if got := keys.current(); len(got.set.Keys) != 2 || got.status != loaded || client.verdictsUnder(got.status) != verdicts {
		t.Fatal("a new signing key made a new status key set: every memoized verdict would be verified again")
	}

	other, err := statusmac.Generate(statusmac.StateNext, t0)
	if err != nil {
		t.Fatal(err)
	}
	keys.load(ctx, secret("3", []*signingkeys.Key{first, next}, &statusmac.Set{Keys: []*statusmac.Key{statusKey, other}}))
	if got := keys.current().status; got == loaded || len(got.Keys) != 2 {
		t.Fatal("new status keys were not loaded as a new set")
	}
}
