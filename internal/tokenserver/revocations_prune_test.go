package tokenserver

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// A tenant that creates and deletes clients in a loop would otherwise grow the cluster-wide list
// without bound: a not-before older than any token's lifetime refuses nothing and is left out,
// while a disabled client's "every token" entry stays.
func TestTheListLeavesOutNotBeforesOlderThanAnyTokenAndKeepsDisabledClients(t *testing.T) {
	r, clients, bindings := revocationFixture(t)
	old := metav1.NewTime(t0.Add(-revocationHorizon - time.Second))
	deletedBinding := func(id string, at *metav1.Time) *m2mv1alpha1.ClientIDBinding {
		b := &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: id, UID: types.UID(id)}, Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: id, Namespace: "tenant", Name: id}}
		b.Status.TokensRevokedBefore, b.Status.DeletedAt = at, at
		return b
	}
	for i := range 1000 {
		_ = bindings.Add(deletedBinding(fmt.Sprintf("m2m-churn-%04d", i), &old))
	}
	recent := metav1.NewTime(t0.Add(-revocationHorizon + time.Minute))
	_ = bindings.Add(deletedBinding("m2m-recent", &recent))
	disabled := testClient("m2m-disabled", goodSecret)
	disabled.Spec.Disabled = true
	disabled.Spec.RevokeTokensIssuedBefore = &old
	_ = clients.Add(disabled)
	_ = bindings.Add(binding("m2m-disabled", nil, false))

	want := map[string]int64{"m2m-recent": recent.Unix(), "m2m-disabled": RevokedForever}
	if got := r.Revoked(r.trusted).NotBefore; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("revoked %v, want %v", got, want)
	}
}
