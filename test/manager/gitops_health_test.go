package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// The health that Flux (kstatus) and Argo CD (config/argocd/health.lua) see of M2MClients in the
// states the real manager leaves them in.

func TestFluxAndArgoCDSeeAReadyClientAsHealthy(t *testing.T) {
	ns := namespace(t)
	created := newClient(ns, "ready")
	create(t, created)
	// The API server's answer to the create, before the manager has written any status.
	fresh := asUnstructured(t, created)
	if got := kstatusOf(t, fresh); got.Status != status.CurrentStatus {
		t.Errorf("kstatus says %s of a client without status; its rule for objects without conditions says Current (docs/gitops.md)", got.Status)
	}
	if got, msg := argoHealth(t, fresh); got != "Progressing" {
		t.Errorf("Argo CD says %s (%s) of a client without status, want Progressing", got, msg)
	}

	obj := waitReady(t, ns, "ready", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	u := fetch(t, obj)
	if got := kstatusOf(t, u); got.Status != status.CurrentStatus {
		t.Errorf("kstatus says %s (%s) of a Ready client, want Current", got.Status, got.Message)
	}
	if got, msg := argoHealth(t, u); got != "Healthy" || !strings.Contains(msg, m2mv1alpha1.ReasonCredentialsReady) {
		t.Errorf("Argo CD says %s (%s) of a Ready client, want Healthy with Ready's reason", got, msg)
	}
	// What lets Argo CD compare M2MClients without ignoreDifferences: the manager writes status
	// only, never spec or metadata.
	if obj.Generation != created.Generation || !equality.Semantic.DeepEqual(obj.Spec, created.Spec) ||
		!equality.Semantic.DeepEqual(obj.Annotations, created.Annotations) || !equality.Semantic.DeepEqual(obj.Labels, created.Labels) ||
		!equality.Semantic.DeepEqual(obj.Finalizers, created.Finalizers) || len(obj.OwnerReferences) != 0 {
		t.Errorf("the manager changed the client's spec or metadata: created %+v %+v, now %+v %+v", created.ObjectMeta, created.Spec, obj.ObjectMeta, obj.Spec)
	}
}

func TestFluxSeesAClientInSecretConflictAsFailedAndArgoCDAsDegraded(t *testing.T) {
	ns := namespace(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken-credentials"}, Data: map[string][]byte{"password": []byte("theirs")}})
	create(t, newClient(ns, "taken"))
	obj := waitReady(t, ns, "taken", metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict)
	u := fetch(t, obj)
	got := kstatusOf(t, u)
	if got.Status != status.FailedStatus || !strings.Contains(got.Message, "taken-credentials") {
		t.Errorf("kstatus says %s (%s) of a client in SecretConflict, want Failed naming the Secret", got.Status, got.Message)
	}
	if len(got.Conditions) != 1 || got.Conditions[0].Type != status.ConditionStalled || got.Conditions[0].Reason != m2mv1alpha1.ReasonSecretConflict {
		t.Errorf("kstatus conditions %+v, want Stalled for %s", got.Conditions, m2mv1alpha1.ReasonSecretConflict)
	}
	if health, msg := argoHealth(t, u); health != "Degraded" || !strings.Contains(msg, m2mv1alpha1.ReasonSecretConflict) || !strings.Contains(msg, "taken-credentials") {
		t.Errorf("Argo CD says %s (%s) of a client in SecretConflict, want Degraded with Ready's reason and message", health, msg)
	}
}

func TestFluxAndArgoCDSeeAClientWhoseNewGenerationTheManagerHasNotReconciledAsProgressing(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "stale"))
	obj := waitReady(t, ns, "stale", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	freezeStatus(t, ns, obj)
	base := obj.DeepCopy()
	obj.Spec.Scopes = append(obj.Spec.Scopes, "write:things")
	if err := env.Client.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	u := fetch(t, obj)
	if gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration"); u.GetGeneration() != gen+1 {
		t.Fatalf("generation %d, observed %d: the test needs one unobserved generation", u.GetGeneration(), gen)
	}
	if got := kstatusOf(t, u); got.Status != status.InProgressStatus {
		t.Errorf("kstatus says %s (%s) of a client with an unobserved generation, want InProgress", got.Status, got.Message)
	}
	if got, msg := argoHealth(t, u); got != "Progressing" {
		t.Errorf("Argo CD says %s (%s) of a client with an unobserved generation, want Progressing", got, msg)
	}
}

func TestFluxAndArgoCDSeeAClientWithoutAVerdictYetAsProgressing(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "issuing")
	create(t, obj)
	// The status a first reconcile that failed writes (the real one succeeds here): the manager's
	// own decision, on the object the API server stored.
	obj.Status.ObservedGeneration = obj.Generation
	h := controllers.DecideHealth(nil, errors.New("the API server timed out"))
	obj.Status.Conditions = []metav1.Condition{*h.Reconciling}
	u := asUnstructured(t, obj)
	if got := kstatusOf(t, u); got.Status != status.InProgressStatus {
		t.Errorf("kstatus says %s (%s) of a client the manager is still issuing, want InProgress", got.Status, got.Message)
	}
	if got, msg := argoHealth(t, u); got != "Progressing" || !strings.Contains(msg, m2mv1alpha1.ReasonIssuingCredentials) {
		t.Errorf("Argo CD says %s (%s) of a client the manager is still issuing, want Progressing with the Reconciling reason", got, msg)
	}
}

func TestTheArgoCDConfigMapCarriesTheHealthCheckOfConfigArgocd(t *testing.T) {
	objs, err := manifests.Read(filepath.Join(controlplane.Root(), "config", "argocd"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("config/argocd: %d objects, %v; want the argocd-cm ConfigMap", len(objs), err)
	}
	got, _, _ := unstructured.NestedString(objs[0].Object, "data", "resource.customizations.health.m2m.dev_M2MClient")
	if got != healthLua(t) {
		t.Errorf("the health check in %s/argocd-cm.yaml is not health.lua:\n%s", objs[0].GetName(), got)
	}
}

// freezeStatus makes the API server refuse every status write of the M2MClients of ns, the
// manager's included, until the test ends, so that a new generation stays unobserved.
func freezeStatus(t *testing.T, ns string, obj *m2mv1alpha1.M2MClient) {
	t.Helper()
	ctx := context.Background()
	name := "test-freeze-status-" + ns
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"m2m.dev"}, APIVersions: []string{"*"}, Resources: []string{"m2mclients/status"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "status frozen by the test"}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: ns},
			}},
		},
	}
	for _, o := range []client.Object{policy, binding} {
		create(t, o)
		t.Cleanup(func() { _ = env.Client.Delete(ctx, o) })
	}
	manager, err := client.New(managerConfig, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	probe := []byte(`{"status":{"observedGeneration":999}}`)
	testenv.Eventually(t, wait, func() error {
		err := manager.Status().Patch(ctx, obj.DeepCopy(), client.RawPatch(types.MergePatchType, probe), client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "status frozen by the test") {
			return fmt.Errorf("a status write of the manager is not refused yet: %v", err)
		}
		return nil
	})
}

// asUnstructured is obj as Flux and Argo CD read it: JSON with its apiVersion and kind.
func asUnstructured(t *testing.T, obj *m2mv1alpha1.M2MClient) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := env.Client.Scheme().Convert(obj, u, nil); err != nil {
		t.Fatal(err)
	}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	return u
}

// fetch reads obj from the API server as unstructured JSON, as Flux and Argo CD do.
func fetch(t *testing.T, obj *m2mv1alpha1.M2MClient) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), u); err != nil {
		t.Fatal(err)
	}
	return u
}

// kstatusOf is the status that Flux's health checks compute.
func kstatusOf(t *testing.T, u *unstructured.Unstructured) *status.Result {
	t.Helper()
	res, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func healthLua(t *testing.T) string {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(controlplane.Root(), "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(script)
}

// argoHealth runs config/argocd/health.lua as Argo CD runs a resource health check: with the
// object in the global obj, in gopher-lua with the safe libraries, returning a table of status
// and message.
func argoHealth(t *testing.T, u *unstructured.Unstructured) (healthStatus, message string) {
	t.Helper()
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable, lua.StringLibName: lua.OpenString, lua.MathLibName: lua.OpenMath} {
		l.Push(l.NewFunction(open))
		l.Push(lua.LString(name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", luaValue(l, u.Object))
	if err := l.DoString(healthLua(t)); err != nil {
		t.Fatal(err)
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message"))
}

// luaValue converts decoded JSON to Lua values as Argo CD does: objects and arrays to tables
// (arrays from index 1), numbers to numbers.
func luaValue(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		table := l.NewTable()
		for k, e := range v {
			table.RawSetString(k, luaValue(l, e))
		}
		return table
	case []any:
		table := l.NewTable()
		for i, e := range v {
			table.RawSetInt(i+1, luaValue(l, e))
		}
		return table
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	default:
		return lua.LNil
	}
}
