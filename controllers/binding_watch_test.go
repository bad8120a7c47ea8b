package controllers

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// A manager limited to some namespaces sees the ClientIDBindings of every namespace (they are
// cluster-scoped); a binding of another namespace's client must not make it reconcile that
// client, which its cache cannot hold (every such reconcile failed with an error log).
func TestABindingOfAnUnwatchedNamespaceWakesNoClient(t *testing.T) {
	r, _ := clientReconciler(t, enforcedKeys(t), interceptor.Funcs{})
	r.Namespaces = []string{"watched"}
	binding := func(ns string) *m2mv1alpha1.ClientIDBinding {
		return &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: "m2m-" + ns}, Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: "m2m-" + ns, Namespace: ns, Name: "c"}}
	}
	if reqs := r.clientsOfBinding(context.Background(), binding("elsewhere")); len(reqs) != 0 {
		t.Fatalf("a binding of an unwatched namespace wakes %v", reqs)
	}
	want := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "watched", Name: "c"}}
	if reqs := r.clientsOfBinding(context.Background(), binding("watched")); len(reqs) != 1 || reqs[0] != want {
		t.Fatalf("a binding of a watched namespace wakes %v, want %v", reqs, want)
	}
}
