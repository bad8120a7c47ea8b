package e2e

import (
	"context"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// The token server and manager of this suite run as the ServiceAccounts of config/rbac, so the
// other tests show that the RBAC is enough. This one shows that the token server's is no more.
func TestTheTokenServerMayReadItsSigningKeySecretAndNoOtherSecret(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(tokenServerConfig, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, signingkeys.DefaultSecret, &corev1.Secret{}); err != nil {
		t.Fatalf("reading the signing-key Secret: %v", err)
	}
	ns := namespace(t)
	obj := billingClient(ns, "private")
	s := readyClient(t, obj)
	if err := c.Get(ctx, client.ObjectKeyFromObject(s), &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Fatalf("reading a client's credentials Secret: %v, want Forbidden", err)
	}
	for _, namespace := range []string{ns, signingkeys.DefaultSecret.Namespace} {
		if err := c.List(ctx, &corev1.SecretList{}, client.InNamespace(namespace)); !apierrors.IsForbidden(err) {
			t.Fatalf("listing Secrets in %s: %v, want Forbidden", namespace, err)
		}
	}
	if err := c.Update(ctx, obj); !apierrors.IsForbidden(err) {
		t.Fatalf("updating an M2MClient: %v, want Forbidden", err)
	}
}

// The running token server serves its metrics, which name clients and failure reasons, on their
// own listener, and not on the token port that every workload can reach.
func TestTheTokenServerServesMetricsApartFromTheTokenPort(t *testing.T) {
	public, err := http.Get(issuer + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	public.Body.Close()
	if public.StatusCode != http.StatusNotFound {
		t.Fatalf("the token port answered /metrics with %d, want 404", public.StatusCode)
	}
	if metric(t, "m2m_clients_cached") < 0 {
		t.Fatal("the metrics listener does not serve m2m_clients_cached")
	}
}
