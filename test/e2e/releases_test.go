package e2e

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Several releases of the chart in one cluster (a staging install beside production, or the chart
// beside make dev) each render their own cluster-scoped objects and RoleBindings in watched
// namespaces: no two releases render one, each binding refers to its own release's role or
// policy, and each manager checks its own release's status policy. (The CRDs, in crds/, are one
// for the whole cluster.) test/manager installs two releases and runs both managers.
func TestReleasesInOneClusterShareNoObjectOutsideTheirNamespaces(t *testing.T) {
	releases := []struct{ name, ns string }{{"m2m", "m2m-system"}, {"m2m-staging", "m2m-staging"}, {"staging", "staging"}}
	for values, args := range map[string][]string{
		"default values":     nil,
		"non-default values": {"-f", writeValues(t, nonDefaultValues)},
	} {
		rendered := map[string]string{} // kind namespace/name of an object outside its release namespace: its release
		for _, r := range releases {
			out, err := helmCommand(t, append([]string{"template", r.name, chartDir(), "--namespace", r.ns}, args...)...)
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeObjects(t, out)
			own := map[string]bool{} // kind/name of every object of this release
			for _, obj := range objs {
				own[obj.GetKind()+"/"+obj.GetName()] = true
				if obj.GetNamespace() == r.ns {
					continue
				}
				if other, ok := rendered[objectKey(obj)]; ok {
					t.Errorf("%s: releases %s and %s both render %s", values, other, r.name, objectKey(obj))
				}
				rendered[objectKey(obj)] = r.name
			}
			for _, obj := range objs {
				if ref := reference(obj); ref != "" && !strings.HasPrefix(ref, "ClusterRole/system:") && !own[ref] {
					t.Errorf("%s: %s of release %s refers to %s, which the release does not render", values, objectKey(obj), r.name, ref)
				}
			}
			policy := ""
			for _, arg := range containerArgs(t, out, "m2m-manager", "manager") {
				if v, ok := strings.CutPrefix(arg, "--status-policy-name="); ok {
					policy = v
				}
			}
			if !own["ValidatingAdmissionPolicy/"+policy] || !own["ValidatingAdmissionPolicyBinding/"+policy] {
				t.Errorf("%s: the manager of release %s checks for the status policy %q, which the release does not render", values, r.name, policy)
			}
		}
	}
}

// reference is the kind/name of the role a binding grants or of the policy a policy binding
// applies, or "" for other objects.
func reference(obj *unstructured.Unstructured) string {
	switch obj.GetKind() {
	case "ClusterRoleBinding", "RoleBinding":
		kind, _, _ := unstructured.NestedString(obj.Object, "roleRef", "kind")
		name, _, _ := unstructured.NestedString(obj.Object, "roleRef", "name")
		return kind + "/" + name
	case "ValidatingAdmissionPolicyBinding":
		name, _, _ := unstructured.NestedString(obj.Object, "spec", "policyName")
		return "ValidatingAdmissionPolicy/" + name
	}
	return ""
}
