package tls

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

var locationKey = types.NamespacedName{Namespace: "m2m-system", Name: m2mv1alpha1.TokenServerConfigMap}

// location is the ConfigMap where the manager publishes where the token server is.
func location(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), locationKey, cm); err != nil {
		t.Fatal(err)
	}
	return cm
}

// The manager publishes the install's issuer, token URL and CA bundle in a ConfigMap of its
// namespace, the values of every credentials Secret; a tenant with every right in its own
// namespace may read that ConfigMap, and neither change, delete nor replace it, nor read another
// ConfigMap there.
func TestTheManagerPublishesWhereTheTokenServerIsForEveryoneToReadAndNoTenantToWrite(t *testing.T) {
	ctx := context.Background()
	testenv.Eventually(t, wait, func() error {
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, locationKey, cm); err != nil {
			return err
		}
		want := map[string]string{m2mv1alpha1.SecretKeyIssuer: issuer, m2mv1alpha1.SecretKeyTokenURL: issuer + "/oauth2/token",
			m2mv1alpha1.SecretKeyCA: string(secret(t, caSecret).Data[servingcert.Bundle])}
		for k, v := range want {
			if cm.Data[k] != v {
				return fmt.Errorf("the ConfigMap's %s is %q, want %q", k, cm.Data[k], v)
			}
		}
		return nil
	})
	if l := location(t).Labels; l[m2mv1alpha1.ManagedByLabel] != m2mv1alpha1.ManagedByValue {
		t.Fatalf("labels %v", l)
	}

	ns := testenv.Namespace(t, env.Client)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	read := &corev1.ConfigMap{}
	if err := tenant.Get(ctx, locationKey, read); err != nil || read.Data[m2mv1alpha1.SecretKeyIssuer] != issuer {
		t.Fatalf("a tenant reading the ConfigMap: %v", err)
	}
	edited := read.DeepCopy()
	edited.Data[m2mv1alpha1.SecretKeyTokenURL] = "https://attacker.example/oauth2/token"
	if err := tenant.Update(ctx, edited); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant updating the ConfigMap: %v, want Forbidden", err)
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"data":{"issuer":"https://attacker.example"}}`))
	if err := tenant.Patch(ctx, read.DeepCopy(), patch); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant patching the ConfigMap: %v, want Forbidden", err)
	}
	if err := tenant.Delete(ctx, read.DeepCopy()); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant deleting the ConfigMap: %v, want Forbidden", err)
	}
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: locationKey.Namespace, Name: "tenant-location"}, Data: map[string]string{"issuer": "https://attacker.example"}}
	if err := tenant.Create(ctx, other); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant creating a ConfigMap in the manager's namespace: %v, want Forbidden", err)
	}
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := tenant.Get(ctx, client.ObjectKeyFromObject(other), &corev1.ConfigMap{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant reading another ConfigMap of the manager's namespace: %v, want Forbidden", err)
	}
	if got := location(t).Data[m2mv1alpha1.SecretKeyIssuer]; got != issuer {
		t.Fatalf("the ConfigMap's issuer is %q", got)
	}
}
