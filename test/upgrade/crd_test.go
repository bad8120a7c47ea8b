package upgrade

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// Helm installs crds/ once and never upgrades it, so docs/operations.md tells chart users to
// apply the new CRDs before `helm upgrade`: kubectl apply --server-side --force-conflicts -f
// charts/m2m-operator/crds/. Here, a cluster has the CRD as a version before key pairs stored
// it (no spec.authentication.keyPair): the API server drops the field. After the documented
// step, it stores it, and the client stored before is intact.
func TestApplyingTheChartsCRDsUpgradesAnOlderCRD(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join(controlplane.Root(), "charts", "m2m-operator", "crds", "m2m.dev.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crds, err := manifests.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	var current *unstructured.Unstructured
	for _, c := range crds {
		if c.GetName() == "m2mclients.m2m.dev" {
			current = c
		}
	}
	if current == nil {
		t.Fatal("the chart's crds/ lacks m2mclients.m2m.dev")
	}
	// The older version: the same CRD without keyPair.
	old := current.DeepCopy()
	versions, _, _ := unstructured.NestedSlice(old.Object, "spec", "versions")
	auth := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "authentication", "properties"}
	v0 := versions[0].(map[string]any)
	props, found, _ := unstructured.NestedMap(v0, auth...)
	if !found || props["keyPair"] == nil {
		t.Fatal("the current CRD has no keyPair to take away")
	}
	delete(props, "keyPair")
	_ = unstructured.SetNestedMap(v0, props, auth...)
	// Its validation rules name keyPair too; the older version had none of them.
	_ = unstructured.SetNestedSlice(v0, nil, append(auth[:len(auth)-1], "x-kubernetes-validations")...)
	_ = unstructured.SetNestedSlice(old.Object, versions, "spec", "versions")
	apply := func(obj *unstructured.Unstructured) {
		t.Helper()
		obj.SetResourceVersion("")
		obj.SetManagedFields(nil)
		if err := env.Client.Patch(ctx, obj, client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	apply(old)

	ns := testenv.Namespace(t, env.Client)
	create := func(name string) *m2mv1alpha1.M2MClient {
		t.Helper()
		obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:things"},
				Authentication: m2mv1alpha1.ClientAuthentication{KeyPair: &m2mv1alpha1.KeyPairPolicy{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}}}}
		var got *m2mv1alpha1.M2MClient
		testenv.Eventually(t, wait, func() error {
			// The API server serves a changed CRD's schema a moment after it stores it.
			_ = env.Client.Delete(ctx, obj)
			o := obj.DeepCopy()
			o.ResourceVersion = ""
			if err := env.Client.Create(ctx, o); err != nil {
				return err
			}
			got = &m2mv1alpha1.M2MClient{}
			return env.Client.Get(ctx, client.ObjectKeyFromObject(o), got)
		})
		return got
	}
	if before := create("before"); before.Spec.Authentication.KeyPair != nil {
		t.Fatal("the older CRD kept keyPair; the test does not model an older version")
	}

	apply(current) // the documented step
	var after *m2mv1alpha1.M2MClient
	testenv.Eventually(t, wait, func() error {
		after = create("after")
		if after.Spec.Authentication.KeyPair == nil {
			return os.ErrNotExist
		}
		return nil
	})
	if after.Spec.Authentication.KeyPair.Algorithm != m2mv1alpha1.KeyAlgorithmEdDSA {
		t.Fatalf("keyPair stored as %+v", after.Spec.Authentication.KeyPair)
	}
	before := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "before"}, before); err != nil || len(before.Spec.Scopes) != 1 {
		t.Fatalf("the client stored before the upgrade: %v, %+v", err, before.Spec)
	}
}
