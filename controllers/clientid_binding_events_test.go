package controllers

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// ClientIDBindings are cluster-wide, so a manager that watches some namespaces sees the bindings
// of another install's clients too: it queues none of those, which it could only fail to
// reconcile, and still queues its own clients that wait for the ID.
func TestABindingQueuesOnlyTheClientsOfTheWatchedNamespaces(t *testing.T) {
	waiting := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "waiting"}, Spec: m2mv1alpha1.M2MClientSpec{ClientID: "m2m-shared"}}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(waiting).WithIndex(&m2mv1alpha1.M2MClient{}, clientIDIndex, indexClientID).Build()
	binding := func(ns string) *m2mv1alpha1.ClientIDBinding {
		return &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: "m2m-shared"}, Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: "m2m-shared", Namespace: ns, Name: "holder"}}
	}
	for _, tc := range []struct {
		sentence  string
		watch     []string
		bindingNS string
		want      []types.NamespacedName
	}{
		{"a binding of a watched namespace queues its holder and the waiting clients", []string{"team-a", "team-b"}, "team-b",
			[]types.NamespacedName{{Namespace: "team-b", Name: "holder"}, {Namespace: "team-a", Name: "waiting"}}},
		{"a binding of another install's namespace queues only the waiting clients", []string{"team-a"}, "team-z",
			[]types.NamespacedName{{Namespace: "team-a", Name: "waiting"}}},
		{"a manager of every namespace queues the holder wherever it is", nil, "team-z",
			[]types.NamespacedName{{Namespace: "team-z", Name: "holder"}, {Namespace: "team-a", Name: "waiting"}}},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			r := &M2MClientReconciler{Client: c, WatchNamespaces: tc.watch}
			var got []types.NamespacedName
			for _, req := range r.clientsOfBinding(context.Background(), binding(tc.bindingNS)) {
				got = append(got, req.NamespacedName)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("queued %v, want %v", got, tc.want)
			}
		})
	}
}
