package manager

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// The record of a revocation on a binding cannot be erased by removing status whole: the rule on
// status.tokensRevokedBefore holds for {"status":null} as for the field set to null.
func TestABindingsRevocationRecordCannotBeErasedWithStatusNull(t *testing.T) {
	ctx := context.Background()
	id := fmt.Sprintf("m2m-erase-%d", time.Now().UnixNano())
	b := &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: id}, Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: id, Namespace: "elsewhere", Name: "api"}}
	create(t, b)
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	set := fmt.Sprintf(`{"status":{"tokensRevokedBefore":%q}}`, at)
	if err := env.Client.Status().Patch(ctx, b, client.RawPatch(types.MergePatchType, []byte(set))); err != nil {
		t.Fatal(err)
	}
	for _, patch := range []string{`{"status":{"tokensRevokedBefore":null}}`, `{"status":null}`} {
		if err := env.Client.Status().Patch(ctx, b, client.RawPatch(types.MergePatchType, []byte(patch))); !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want Invalid", patch, err)
		}
	}
	got := &m2mv1alpha1.ClientIDBinding{}
	if err := env.Client.Get(ctx, types.NamespacedName{Name: id}, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.TokensRevokedBefore == nil {
		t.Fatal("status.tokensRevokedBefore was erased")
	}
}
