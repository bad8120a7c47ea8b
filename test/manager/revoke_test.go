package manager

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A tenant whose grant includes m2mclients/status (a grant of m2m.dev "*") cannot mark a
// revocation done before asking for it, nor stop one in progress: the policy
// m2m-manager-writes-status refuses its writes of the revocation fields, and the manager revokes
// the secret for the value the tenant tried to mark handled.
func TestATenantWhoMayWriteStatusCannotMarkARevocationDone(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	if err := tenant.Create(ctx, newClient(ns, "leaked")); err != nil {
		t.Fatal(err)
	}
	obj := waitReady(t, ns, "leaked", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	leaked := string(secretOf(t, ns, "leaked-credentials").Data[m2mv1alpha1.SecretKeyClientSecret])

	for sentence, forge := range map[string]func(*m2mv1alpha1.M2MClient){
		"the values marked as acted on": func(o *m2mv1alpha1.M2MClient) {
			o.Status.LastRevokeAnnotation, o.Status.LastRevokeTrigger = "leak", "leak"
		},
		"a revocation marked as done": func(o *m2mv1alpha1.M2MClient) {
			now := metav1.Now()
			o.Status.RevocationPending, o.Status.LastRevocationTime = false, &now
		},
	} {
		forged := obj.DeepCopy()
		forge(forged)
		if err := tenant.Status().Patch(ctx, forged, client.MergeFrom(obj)); !apierrors.IsForbidden(err) {
			t.Fatalf("%s: the tenant's status write got %v, want Forbidden", sentence, err)
		}
	}

	base := obj.DeepCopy()
	obj.Annotations = map[string]string{m2mv1alpha1.RevokePreviousAnnotation: "leak"}
	if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		get(t, obj)
		st := obj.Status
		if st.LastRevokeAnnotation != "leak" || st.RevocationPending || st.LastRevocationTime == nil || len(st.AcceptedSecrets) != 1 {
			return fmt.Errorf("not revoked yet: %q pending=%v entries=%d", st.LastRevokeAnnotation, st.RevocationPending, len(st.AcceptedSecrets))
		}
		return nil
	})
	if testenv.Accepts(ctx, env.Client, obj, leaked, time.Now()) {
		t.Fatal("status still accepts the leaked secret after the revocation")
	}
}

// A client that turned its secret off (for ServiceAccounts, say) accepts the secret it had for the
// grace period; a revocation ends that at once, and issues nothing, since the client takes no
// credential in its Secret.
func TestRevokingAClientThatTakesNoSecretAnyMoreDropsTheSecretInItsGracePeriod(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	create(t, newClient(ns, "switched"))
	obj := waitReady(t, ns, "switched", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	base := obj.DeepCopy()
	off := false
	obj.Spec.Authentication.ClientSecret, obj.Spec.Authentication.ServiceAccounts = &off, []string{"app"}
	if err := env.Client.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	obj = waitReady(t, ns, "switched", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if n := len(obj.Status.AcceptedSecrets); n != 1 || obj.Status.AcceptedSecrets[0].ExpiresAt == nil {
		t.Fatalf("the retired secret is not in its grace period: %+v", obj.Status.AcceptedSecrets)
	}

	base = obj.DeepCopy()
	obj.Annotations = map[string]string{m2mv1alpha1.RevokePreviousAnnotation: "leak"}
	if err := env.Client.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		get(t, obj)
		if st := obj.Status; st.LastRevokeAnnotation != "leak" || st.LastRevocationTime == nil || len(st.AcceptedSecrets) != 0 {
			return fmt.Errorf("not revoked yet: %q, %d entries", st.LastRevokeAnnotation, len(st.AcceptedSecrets))
		}
		return nil
	})
	waitEvents(t, ns, "switched", m2mv1alpha1.EventRevoked, 1)
}
