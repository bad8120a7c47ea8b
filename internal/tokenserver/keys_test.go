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
