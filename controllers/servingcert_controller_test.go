package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// With neither Secret there, the reconciler writes the CA into an empty CA Secret, which creates
// it, then the serving certificate into an empty certificate Secret (whose creation starts the
// next reconcile, as the watch would), which writes nothing and waits for the certificate's
// renewal: missing Secrets take the same write path as existing ones.
func TestMissingCAAndCertificateSecretsAreWrittenFromEmptyOnes(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).Build()
	caRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-ca"}
	certRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
	hosts := []string{"m2m-token-server.m2m-system.svc"}
	r := &ServingCertReconciler{Client: c, APIReader: c, Clock: clocktesting.NewFakeClock(now), CASecret: caRef, CertSecret: certRef, Hosts: hosts, Policy: servingcert.DefaultPolicy}
	var res ctrl.Result
	for range 3 {
		var err error
		if res, err = r.Reconcile(context.Background(), ctrl.Request{NamespacedName: certRef}); err != nil {
			t.Fatal(err)
		}
	}
	ca, cert := &corev1.Secret{}, &corev1.Secret{}
	if err := c.Get(context.Background(), caRef, ca); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), certRef, cert); err != nil {
		t.Fatal(err)
	}
	if ca.Type != corev1.SecretTypeOpaque || ca.Labels[m2mv1alpha1.ComponentLabel] != m2mv1alpha1.CAComponent || ca.Labels[m2mv1alpha1.ManagedByLabel] != m2mv1alpha1.ManagedByValue || len(ca.Annotations) != 0 {
		t.Fatalf("CA Secret %s, labels %v, annotations %v", ca.Type, ca.Labels, ca.Annotations)
	}
	if string(ca.Data[servingcert.Bundle]) != string(servingcert.BundleOf(ca.Data[servingcert.CACert])) {
		t.Fatal("the bundle is not the one CA")
	}
	if cert.Type != corev1.SecretTypeTLS || cert.Labels[m2mv1alpha1.ComponentLabel] != m2mv1alpha1.ServingCertComponent || string(cert.Data[servingcert.TLSCA]) != string(ca.Data[servingcert.Bundle]) {
		t.Fatalf("certificate Secret %s, labels %v", cert.Type, cert.Labels)
	}
	kp, err := servingcert.Parse(cert.Data[servingcert.TLSCert], cert.Data[servingcert.TLSKey])
	if err != nil || !servingcert.Covers(kp.Cert, hosts) {
		t.Fatalf("the serving certificate: %v", err)
	}
	if want := servingcert.DefaultPolicy.CertValidity * 2 / 3; res.RequeueAfter < want-2*time.Minute || res.RequeueAfter > want {
		t.Fatalf("requeue after %s, want the certificate's renewal in %s", res.RequeueAfter, want)
	}
}
