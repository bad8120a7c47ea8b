package controllers

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// A pending secret (its Secret write failed) is forgotten when its client is gone, so that
// clients created and deleted while their writes fail do not grow the manager's memory.
func TestAPendingSecretIsForgottenWhenItsClientIsGone(t *testing.T) {
	r := &M2MClientReconciler{Client: fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).Build()}
	key := types.NamespacedName{Namespace: "ns", Name: "gone"}
	r.pending.Store(key, pendingSecret{uid: "uid-1", hash: "sha256:x", value: "v"})
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.pending.Load(key); ok {
		t.Fatal("the pending secret of a deleted client is still held")
	}
}
