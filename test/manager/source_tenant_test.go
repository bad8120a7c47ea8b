package manager

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// sourced is a client of ns whose credential comes from the Secret source.
func sourced(ns, name, source string) *m2mv1alpha1.M2MClient {
	obj := newClient(ns, name)
	obj.Spec.Authentication.Source = &m2mv1alpha1.CredentialSource{Name: source}
	return obj
}

// refusedSource waits until the tenant's client is Ready False, SourceSecretRefused, and checks
// that the manager accepted no credential for it.
func refusedSource(t *testing.T, ns, name string) *m2mv1alpha1.M2MClient {
	t.Helper()
	obj := waitReady(t, ns, name, metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretRefused)
	if n := len(obj.Status.AcceptedSecrets); n != 0 {
		t.Fatalf("the manager accepted %d credentials from a refused source", n)
	}
	return obj
}

// A tenant who may write M2MClients and Secrets in its own namespace, and nothing else, cannot
// use spec.authentication.source to take a credential the manager wrote, nor one of another
// namespace, nor to make the manager hold a Secret's worth of bytes per client.
func TestATenantCannotNameAsSourceASecretTheManagerWritesOrOfAnotherNamespaceOrAHugeEntry(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantSecrets)

	t.Run("another client's credentials Secret is refused and nothing is accepted", func(t *testing.T) {
		if err := tenant.Create(ctx, newClient(ns, "victim")); err != nil {
			t.Fatal(err)
		}
		victim := waitReady(t, ns, "victim", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
		if err := tenant.Create(ctx, sourced(ns, "thief", victim.Status.SecretName)); err != nil {
			t.Fatal(err)
		}
		refusedSource(t, ns, "thief")
	})

	t.Run("its own credentials Secret is refused", func(t *testing.T) {
		if err := tenant.Create(ctx, sourced(ns, "self", "self-credentials")); err != nil {
			t.Fatal(err)
		}
		refusedSource(t, ns, "self")
	})

	t.Run("a Secret of another namespace cannot be named", func(t *testing.T) {
		other := namespace(t)
		err := tenant.Create(ctx, sourced(ns, "elsewhere", other+"/vault-credentials"), client.DryRunAll)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.authentication.source.name") {
			t.Fatalf("a source named %s/vault-credentials: %v, want Invalid on spec.authentication.source.name", other, err)
		}
	})

	t.Run("an entry of 1 MiB is refused", func(t *testing.T) {
		huge := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "huge", Annotations: map[string]string{m2mv1alpha1.SourceForAnnotation: "hoarder"}},
			Data:       map[string][]byte{m2mv1alpha1.SecretKeyClientSecret: bytes.Repeat([]byte("x"), 1<<20)},
		}
		if err := tenant.Create(ctx, huge); err != nil {
			t.Fatal(err)
		}
		if err := tenant.Create(ctx, sourced(ns, "hoarder", "huge")); err != nil {
			t.Fatal(err)
		}
		obj := refusedSource(t, ns, "hoarder")
		if msg := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady).Message; !strings.Contains(msg, "bytes, over") {
			t.Fatalf("the refusal is not for the entry's size: %s", msg)
		}
	})
}
