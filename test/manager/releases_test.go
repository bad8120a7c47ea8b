package manager

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// renderRelease renders the chart as release in namespace ns with --set arguments.
func renderRelease(t *testing.T, release, ns string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	helm, err := controlplane.Helm()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"template", release, controlplane.Root() + "/charts/m2m-operator", "--namespace", ns}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, stderr.String())
	}
	objs, err := manifests.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// Two releases of the chart in one cluster, each watching its own namespace, as the docs say
// two installs must: each release's objects go in beside the other's, each manager makes its
// clients Ready (the other release's status policy does not lock it out), and a tenant who may
// write status is refused in each namespace, by the policy that names that namespace's manager.
func TestTwoReleasesInOneClusterEachServeTheirOwnNamespaces(t *testing.T) {
	e, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	type release struct{ name, ns, team, policy string }
	releases := []*release{{name: "m2m"}, {name: "m2m-staging"}}
	for _, r := range releases {
		r.ns, r.team = testenv.Namespace(t, e.Client), testenv.Namespace(t, e.Client)
		for _, obj := range renderRelease(t, r.name, r.ns, "watchNamespaces={"+r.team+"}") {
			// Each release applies as its own field manager, without force: an object that two
			// releases both render, with other values, is a conflict.
			if err := e.Client.Patch(ctx, obj, client.Apply, client.FieldOwner("helm-"+r.name)); err != nil {
				t.Fatalf("release %s: %s %s/%s: %v", r.name, obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
			}
			if obj.GetKind() == "Deployment" && obj.GetName() == "m2m-manager" {
				args, _, _ := unstructured.NestedStringSlice(obj.Object, "spec", "template", "spec", "containers", "0", "args")
				for _, arg := range args {
					if v, ok := strings.CutPrefix(arg, "--status-policy-name="); ok {
						r.policy = v
					}
				}
			}
		}
	}
	for _, r := range releases {
		// The releases' own Deployments cannot run here (no kubelet): run each manager as its
		// ServiceAccount, with the flags its Deployment has.
		cfg, err := testenv.ServiceAccount(e.Environment, r.ns, "m2m-manager")
		if err != nil {
			t.Fatal(err)
		}
		testenv.RunManager(t, cfg, controllers.Options{
			IssuerURL: testIssuer, WatchNamespaces: []string{r.team}, StatusPolicyName: r.policy,
			SigningKeySecret: types.NamespacedName{Namespace: r.ns, Name: "m2m-signing-keys"}, SkipNameValidation: true,
		})
	}
	for _, r := range releases {
		onlyTheManagerWritesStatus(t, e, testenv.Tenant(t, e, r.team, testenv.GrantStatus), newClient(r.team, "c"), r.ns)
	}
}
