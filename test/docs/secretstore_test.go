package docs

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// wait bounds how long the test waits for the manager to converge.
const wait = 30 * time.Second

// A new user copies the manifests of docs/gitops.md's secret-store walk-through: they must be
// valid against External Secrets Operator's and Flux's own CRDs, agree with each other, and give
// what the doc says the user sees: SourceSecretMissing (kstatus InProgress) until External
// Secrets Operator writes the Secret, then a Ready client whose credentials Secret carries the
// store's value.
func TestTheSecretStoreWalkThroughWorksAsWritten(t *testing.T) {
	objs := walkThroughManifests(t)
	es, m2m, app, ks := objs["ExternalSecret"], objs["M2MClient"], objs["Application"], objs["Kustomization"]

	ns := m2m.GetNamespace()
	sourceName, _, _ := unstructured.NestedString(m2m.Object, "spec", "authentication", "source", "name")
	sourceKey, _, _ := unstructured.NestedString(m2m.Object, "spec", "authentication", "source", "key")
	if sourceKey == "" {
		sourceKey = m2mv1alpha1.SecretKeyClientSecret
	}
	target, _, _ := unstructured.NestedString(es.Object, "spec", "target", "name")
	policy, _, _ := unstructured.NestedString(es.Object, "spec", "target", "creationPolicy")
	if es.GetNamespace() != ns || target != sourceName || policy != "Owner" {
		t.Fatalf("the ExternalSecret writes Secret %s/%s (creationPolicy %q); the M2MClient reads %s/%s and the doc says creationPolicy Owner", es.GetNamespace(), target, policy, ns, sourceName)
	}
	if !writesEntry(es, sourceKey) {
		t.Fatalf("the ExternalSecret writes no entry %s, the one the M2MClient reads", sourceKey)
	}
	if wave(t, es) >= wave(t, m2m) {
		t.Errorf("the ExternalSecret's sync wave %d is not before the M2MClient's %d", wave(t, es), wave(t, m2m))
	}
	appPath, _, _ := unstructured.NestedString(app.Object, "spec", "source", "path")
	appNS, _, _ := unstructured.NestedString(app.Object, "spec", "destination", "namespace")
	ksPath, _, _ := unstructured.NestedString(ks.Object, "spec", "path")
	if appNS != ns || strings.TrimPrefix(ksPath, "./") != appPath {
		t.Errorf("the Application syncs %s into %s and the Kustomization applies %s; want the same directory, into %s", appPath, appNS, ksPath, ns)
	}
	if w, _, _ := unstructured.NestedBool(ks.Object, "spec", "wait"); !w {
		t.Error("the Kustomization does not wait for its objects' health")
	}

	env := startEnv(t)
	ctx := context.Background()
	c := env.Client
	for _, name := range []string{ns, ks.GetNamespace()} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	strict := client.FieldValidation(metav1.FieldValidationStrict)
	if err := c.Create(ctx, ks.DeepCopy(), client.DryRunAll, strict); err != nil {
		t.Fatalf("Flux's Kustomization CRD refuses the doc's Kustomization: %v", err)
	}
	if err := c.Create(ctx, es, strict); err != nil {
		t.Fatalf("External Secrets Operator's CRD refuses the doc's ExternalSecret: %v", err)
	}
	if err := c.Create(ctx, m2m.DeepCopy(), strict); err != nil {
		t.Fatalf("the doc's M2MClient is refused: %v", err)
	}

	got := testenv.WaitReady(t, c, ns, m2m.GetName(), metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing, wait)
	if r := meta.FindStatusCondition(got.Status.Conditions, m2mv1alpha1.ConditionReconciling); r == nil || r.Status != metav1.ConditionTrue || !strings.Contains(r.Message, target) {
		t.Errorf("Reconciling is %+v while the source is missing; want True, naming Secret %s", r, target)
	}
	if s := meta.FindStatusCondition(got.Status.Conditions, m2mv1alpha1.ConditionStalled); s != nil {
		t.Errorf("the client is Stalled (%s) while it waits for the secret store", s.Message)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: m2m.GetName() + "-credentials"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("reading the credentials Secret while the source is missing: %v; the doc says it does not exist yet", err)
	}
	if k := kstatusOf(t, c, got); k.Status != status.InProgressStatus {
		t.Errorf("kstatus says %s (%s) while the source is missing; the doc says InProgress", k.Status, k.Message)
	}

	// External Secrets Operator, with creationPolicy Owner, makes the ExternalSecret the Secret's
	// controller, and copies the template's annotations, which carry the opt-in, onto it.
	value := testenv.NewSecret(t)
	annotations, _, _ := unstructured.NestedStringMap(es.Object, "spec", "target", "template", "metadata", "annotations")
	source := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: target, Annotations: annotations, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: es.GetAPIVersion(), Kind: es.GetKind(), Name: es.GetName(), UID: es.GetUID(),
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}}},
		Data: map[string][]byte{sourceKey: []byte(value)},
	}
	if err := c.Create(ctx, source); err != nil {
		t.Fatal(err)
	}

	got = testenv.WaitReady(t, c, ns, m2m.GetName(), metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady, wait)
	if k := kstatusOf(t, c, got); k.Status != status.CurrentStatus {
		t.Errorf("kstatus says %s (%s) of the Ready client; the doc says Current", k.Status, k.Message)
	}
	if got.Status.SecretName != m2m.GetName()+"-credentials" {
		t.Errorf("the credentials Secret is %q; the doc says %s-credentials", got.Status.SecretName, m2m.GetName())
	}
	creds := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: got.Status.SecretName}, creds); err != nil {
		t.Fatal(err)
	}
	if string(creds.Data[m2mv1alpha1.SecretKeyClientSecret]) != value {
		t.Error("the credentials Secret does not carry the value the secret store wrote")
	}
	if !testenv.Accepts(ctx, c, got, value, time.Now()) {
		t.Error("status does not accept the value the secret store wrote")
	}
	if n, err := testenv.CountEvents(ctx, c, ns, "M2MClient", m2m.GetName(), "CredentialsCreated"); err != nil || n != 1 {
		t.Errorf("%d CredentialsCreated events (%v); the doc says one", n, err)
	}
}

// walkThroughManifests are the objects of the YAML blocks of docs/gitops.md's section
// "Credentials from your secret store", by kind; each kind appears once.
func walkThroughManifests(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs/gitops.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Credentials from your secret store\n")
	if !ok {
		t.Fatal("docs/gitops.md has no section \"Credentials from your secret store\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	out := map[string]*unstructured.Unstructured{}
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(section, -1) {
		for _, doc := range strings.Split(block[1], "\n---\n") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("a YAML block of the walk-through does not parse: %v\n%s", err, doc)
			}
			if u.GetKind() == "" {
				continue // a fragment of a spec
			}
			if out[u.GetKind()] != nil {
				t.Fatalf("the walk-through has two %ss", u.GetKind())
			}
			out[u.GetKind()] = u
		}
	}
	for _, kind := range []string{"ExternalSecret", "M2MClient", "Application", "Kustomization"} {
		if out[kind] == nil {
			t.Fatalf("the walk-through has no %s", kind)
		}
	}
	return out
}

func writesEntry(es *unstructured.Unstructured, key string) bool {
	data, _, _ := unstructured.NestedSlice(es.Object, "spec", "data")
	for _, d := range data {
		if m, ok := d.(map[string]any); ok && m["secretKey"] == key {
			return true
		}
	}
	return false
}

// wave is the object's Argo CD sync wave; 0 without the annotation, as Argo CD has it.
func wave(t *testing.T, u *unstructured.Unstructured) int {
	t.Helper()
	w, ok := u.GetAnnotations()["argocd.argoproj.io/sync-wave"]
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(w)
	if err != nil {
		t.Fatalf("%s %s has sync wave %q", u.GetKind(), u.GetName(), w)
	}
	return n
}

// startEnv starts an API server with the m2m.dev CRDs and External Secrets Operator's and Flux's,
// the admission policies and RBAC that ship, and a manager under that RBAC.
func startEnv(t *testing.T) *testenv.Env {
	t.Helper()
	optional, err := controlplane.OptionalCRDs()
	if err != nil {
		t.Fatal(err)
	}
	installed, err := testenv.StartInstalled(func(e *envtest.Environment) {
		e.CRDDirectoryPaths = append(e.CRDDirectoryPaths,
			filepath.Join(optional, "external-secrets.io_externalsecrets.yaml"),
			filepath.Join(optional, "kustomize.toolkit.fluxcd.io_kustomizations.yaml"))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = installed.Stop() })
	testenv.RunManager(t, installed.ManagerConfig, controllers.Options{IssuerURL: "https://m2m.test.example"})
	return installed.Env
}

// kstatusOf is the status that Flux's health checks compute of the client as stored.
func kstatusOf(t *testing.T, c client.Client, obj *m2mv1alpha1.M2MClient) *status.Result {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), u); err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
