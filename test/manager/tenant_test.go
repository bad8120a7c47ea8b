package manager

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A tenant with every grant it may have in its own namespace cannot give its client a claim that
// a resource server would read as another client's sub, client_id, scope or exp: the admission
// policy refuses reserved names in any case, on create and on update.
func TestATenantCannotSetAReservedClaimInAnyCase(t *testing.T) {
	ctx := context.Background()
	for _, grant := range []testenv.Grant{testenv.GrantClients, testenv.GrantSecrets, testenv.GrantStatus} {
		t.Run(string(grant), func(t *testing.T) {
			ns := namespace(t)
			tenant := testenv.Tenant(t, env, ns, grant)
			for _, bad := range []string{`{"SUB":"m2m-victim"}`, `{"Client_ID":"m2m-victim"}`, `{"EXP":4102444800}`, `{"Scope":"admin:*"}`, `{"team":"a","sub":"x"}`} {
				obj := newClient(ns, "sneaky")
				obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(bad))
				if err := tenant.Create(ctx, obj); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "tokenClaims cannot set") {
					t.Fatalf("creating with %s: %v, want Invalid", bad, err)
				}
			}
			obj := newClient(ns, "honest")
			obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"a"}`))
			if err := tenant.Create(ctx, obj); err != nil {
				t.Fatalf("the tenant may not create its own client: %v", err)
			}
			base := obj.DeepCopy()
			obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"a","Sub":"m2m-victim"}`))
			if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); !apierrors.IsInvalid(err) {
				t.Fatalf("updating to a reserved claim: %v, want Invalid", err)
			}
		})
	}
}
