package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// The bundle that credentials Secrets carry comes from the configured Secret and key: the
// manager's CA Secret, or cert-manager's certificate Secret; none for an http issuer, and an
// error (retried) while the Secret has no bundle yet, so that no https Secret lacks ca.crt.
func TestTheCABundleComesFromTheConfiguredSecretAndKey(t *testing.T) {
	ref := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
	withCA := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}, Data: map[string][]byte{"ca.crt": []byte("PEM")}}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(withCA).Build()
	r := &M2MClientReconciler{Client: c, APIReader: c, IssuerURL: "https://m2m.example.com", CASecret: ref, CABundleKey: "ca.crt"}
	if b, err := r.caBundle(context.Background()); err != nil || string(b) != "PEM" {
		t.Fatalf("got %q, %v", b, err)
	}
	r.CABundleKey = "bundle.crt"
	if _, err := r.caBundle(context.Background()); err == nil {
		t.Fatal("a Secret without the bundle's key gave a bundle")
	}
	r.IssuerURL = "http://m2m.example.com"
	if b, err := r.caBundle(context.Background()); err != nil || b != nil {
		t.Fatalf("an http issuer got a bundle: %q, %v", b, err)
	}
}
