package podcert

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A cluster without the PodCertificateRequest API (before Kubernetes 1.37, or with it turned
// off) runs the manager as before: the signer does not start, and nothing of it is written.
func TestWithoutThePodCertificateRequestAPITheManagerRunsWithoutTheSigner(t *testing.T) {
	e, err := testenv.Start(func(e *envtest.Environment) {
		e.ControlPlane.GetAPIServer().Configure().Append("runtime-config", "certificates.k8s.io/v1/podcertificaterequests=false")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	ctx := context.Background()
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: caConfigMap.Namespace}}); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, e.Config, controllers.Options{IssuerURL: "https://m2m.test.example", SkipNameValidation: true})
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c"}}
	testenv.CreateReady(t, e.Client, obj, wait)
	// The client being Ready, the manager has run for a while: a signer would have published
	// its CA at start.
	for _, o := range []client.Object{&corev1.ConfigMap{}, &corev1.Secret{}} {
		key := caConfigMap
		if _, ok := o.(*corev1.Secret); ok {
			key = caSecret
		}
		if err := e.Client.Get(ctx, key, o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s: %v, want NotFound", o, key, err)
		}
	}
}
