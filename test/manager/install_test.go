package manager

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// renderInstalledIn renders config/default with config/install's namespace set to ns, as
// docs/operations.md tells an admin to install elsewhere.
func renderInstalledIn(t *testing.T, ns string) []*unstructured.Unstructured {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(controlplane.Root(), "config"))); err != nil {
		t.Fatal(err)
	}
	install := filepath.Join(dir, "install", "kustomization.yaml")
	data, err := os.ReadFile(install)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(install, bytes.Replace(data, []byte("namespace: m2m-system"), []byte("namespace: "+ns), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(dir, "default")).Output()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Decode(rendered)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// Installed into a namespace other than m2m-system, the status policy names that namespace's
// manager: the manager is not locked out of status, and a tenant who may write status (grant c)
// still cannot.
func TestInAnotherNamespaceOnlyThatInstallsManagerMayWriteStatus(t *testing.T) {
	const installNS = "auth-system"
	e, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	ctx := context.Background()
	for _, obj := range renderInstalledIn(t, installNS) {
		if obj.GetKind() == "CustomResourceDefinition" {
			continue // envtest installed it
		}
		if err := e.Client.Patch(ctx, obj, client.Apply, client.FieldOwner("install-test"), client.ForceOwnership); err != nil {
			t.Fatalf("%s %s/%s: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
	}
	cfg, err := testenv.ServiceAccount(e.Environment, installNS, "m2m-manager")
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, cfg, controllers.Options{IssuerURL: testIssuer, SigningKeySecret: types.NamespacedName{Namespace: installNS, Name: "m2m-signing-keys"}, SkipNameValidation: true})

	ns := testenv.Namespace(t, e.Client)
	tenant := testenv.Tenant(t, e, ns, testenv.GrantStatus)
	onlyTheManagerWritesStatus(t, e, tenant, newClient(ns, "c"), installNS)
}

// onlyTheManagerWritesStatus creates obj as tenant, who may write status, and checks that the
// manager installed in installNS makes it Ready and that the tenant's forged status is refused
// by the policy that names that manager.
func onlyTheManagerWritesStatus(t *testing.T, e *testenv.Env, tenant client.Client, obj *m2mv1alpha1.M2MClient, installNS string) {
	t.Helper()
	if err := tenant.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) {
			return fmt.Errorf("the manager in %s did not make the client Ready: %+v", installNS, obj.Status.Conditions)
		}
		return nil
	})
	forged := obj.DeepCopy()
	forged.Status.ClientID = "m2m-someone-else"
	err := tenant.Status().Update(ctx, forged)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "system:serviceaccount:"+installNS+":m2m-manager") {
		t.Fatalf("a tenant's status write in %s: %v, want Forbidden naming the manager of %s", obj.Namespace, err, installNS)
	}
}
