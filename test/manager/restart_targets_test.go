package manager

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// deployment creates a Deployment whose owners opted in for the clients optIn names ("" for
// none).
func deployment(t *testing.T, ns, name, optIn string) *appsv1.Deployment {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	if optIn != "" {
		d.Annotations = map[string]string{m2mv1alpha1.RestartOnRotationAnnotation: optIn}
	}
	create(t, d)
	return d
}

func restartingClient(ns, name string, targets ...string) *m2mv1alpha1.M2MClient {
	obj := newClient(ns, name)
	obj.Spec.Rollout = &m2mv1alpha1.RolloutPolicy{}
	for _, target := range targets {
		obj.Spec.Rollout.RestartTargets = append(obj.Spec.Rollout.RestartTargets, m2mv1alpha1.RestartTarget{Kind: m2mv1alpha1.RestartKindDeployment, Name: target})
	}
	return obj
}

// waitRestartTargets waits until the client's RestartTargetsReady condition has the reason given,
// for its current generation, and returns its message.
func waitRestartTargets(t *testing.T, ns, name, reason string) string {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{}
	var msg string
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			return err
		}
		c := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionRestartTargetsReady)
		if c == nil || c.Reason != reason || obj.Status.ObservedGeneration != obj.Generation {
			return fmt.Errorf("RestartTargetsReady is %+v at generation %d of %d, want %s", c, obj.Status.ObservedGeneration, obj.Generation, reason)
		}
		msg = c.Message
		return nil
	})
	return msg
}

// currentVersion is the version of the credential the client's Secret carries, as a restarted
// workload records it.
func currentVersion(t *testing.T, ns, name string) string {
	t.Helper()
	s := secretOf(t, ns, name+"-credentials")
	return controllers.RestartVersion(credentials.Hash(string(s.Data[m2mv1alpha1.SecretKeyClientSecret])))
}

// changeDescription changes the client's spec and waits until the manager has reconciled that
// generation: every step of the reconcile, the restart of targets included, has run by then.
func changeDescription(t *testing.T, ns, name, description string) {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	get(t, obj)
	base := obj.DeepCopy()
	obj.Spec.Description = description
	if err := env.Client.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, name, metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
}

// A workload that reads the secret once is restarted once for each new credential: its pod
// template records the credential's version (the patch the Deployment controller rolls out), an
// event says so, and reconciles that find the record in place patch nothing.
func TestARotationRestartsAnOptedInDeploymentOncePerCredential(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	web := deployment(t, ns, "web", "other-client, billing")
	create(t, restartingClient(ns, "billing", "web"))
	waitRestartTargets(t, ns, "billing", m2mv1alpha1.ReasonTargetsRestarted)
	first := currentVersion(t, ns, "billing")
	get(t, web)
	if got := web.Spec.Template.Annotations[m2mv1alpha1.RestartedForAnnotation]; got != "billing="+first {
		t.Fatalf("the pod template records %q, want billing=%s", got, first)
	}
	waitEvents(t, ns, "billing", m2mv1alpha1.EventWorkloadRestarted, 1)

	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"}}
	get(t, obj)
	base := obj.DeepCopy()
	obj.Spec.Rotation.Trigger = "rotate-1"
	if err := env.Client.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(web), web); err != nil {
			return err
		}
		second := currentVersion(t, ns, "billing")
		if second == first || web.Spec.Template.Annotations[m2mv1alpha1.RestartedForAnnotation] != "billing="+second {
			return fmt.Errorf("the pod template records %q; the Secret's credential is version %s", web.Spec.Template.Annotations[m2mv1alpha1.RestartedForAnnotation], second)
		}
		return nil
	})
	waitEvents(t, ns, "billing", m2mv1alpha1.EventWorkloadRestarted, 2)
	generation := web.Generation

	changeDescription(t, ns, "billing", "reconciled again with the same credential")
	get(t, web)
	if web.Generation != generation {
		t.Fatalf("a reconcile with the same credential changed the Deployment (generation %d, was %d)", web.Generation, generation)
	}
	if n := events(t, ns, "billing", m2mv1alpha1.EventWorkloadRestarted); n != 2 {
		t.Fatalf("%d restart events, want 2", n)
	}
}

// A manager that died after patching a workload, before it wrote anything else, finds the record
// on the workload and does not restart it again.
func TestARestartRecordedBeforeACrashIsNotRepeated(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	web := deployment(t, ns, "web", "billing")
	create(t, newClient(ns, "billing"))
	waitReady(t, ns, "billing", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	// What the crashed manager's one write left.
	get(t, web)
	base := web.DeepCopy()
	web.Spec.Template.Annotations = map[string]string{m2mv1alpha1.RestartedForAnnotation: "billing=" + currentVersion(t, ns, "billing")}
	if err := env.Client.Patch(ctx, web, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	generation := web.Generation

	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"}}
	get(t, obj)
	objBase := obj.DeepCopy()
	obj.Spec.Rollout = restartingClient(ns, "billing", "web").Spec.Rollout
	if err := env.Client.Patch(ctx, obj, client.MergeFrom(objBase)); err != nil {
		t.Fatal(err)
	}
	waitRestartTargets(t, ns, "billing", m2mv1alpha1.ReasonTargetsRestarted)
	get(t, web)
	if web.Generation != generation {
		t.Fatalf("the Deployment was patched again (generation %d, was %d)", web.Generation, generation)
	}
	if n := events(t, ns, "billing", m2mv1alpha1.EventWorkloadRestarted); n != 0 {
		t.Fatalf("%d restart events, want none", n)
	}
}

// A tenant whose only rights are on M2MClients of its namespace names every Deployment there as a
// restart target: the one that opted in for another client and the one that opted in for none
// are left untouched, and the refusal is in the condition and a Warning event. The tenant cannot
// patch the Deployments itself either; only their owners' annotation lets the manager restart
// them.
func TestATenantCannotGetAWorkloadRestartedThatDidNotOptIn(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	other := deployment(t, ns, "payments-api", "payments")
	bare := deployment(t, ns, "database", "")
	if err := tenant.Create(ctx, restartingClient(ns, "sneaky", "payments-api", "database", "missing")); err != nil {
		t.Fatalf("the tenant may not create its own client: %v", err)
	}
	msg := waitRestartTargets(t, ns, "sneaky", m2mv1alpha1.ReasonRestartNotAllowed)
	for _, want := range []string{"Deployment payments-api", "Deployment database"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("the condition says %q; it does not name %s", msg, want)
		}
	}
	waitEvents(t, ns, "sneaky", m2mv1alpha1.ReasonRestartNotAllowed, 1)
	for _, d := range []*appsv1.Deployment{other, bare} {
		rv := d.ResourceVersion
		get(t, d)
		if d.ResourceVersion != rv || d.Spec.Template.Annotations[m2mv1alpha1.RestartedForAnnotation] != "" {
			t.Fatalf("Deployment %s was changed: %+v", d.Name, d.Spec.Template.Annotations)
		}
		base := d.DeepCopy()
		d.Spec.Template.Annotations = map[string]string{m2mv1alpha1.RestartedForAnnotation: "sneaky=x"}
		if err := tenant.Patch(ctx, d, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
			t.Fatalf("the tenant patched Deployment %s itself: %v, want Forbidden", d.Name, err)
		}
	}
	if n := events(t, ns, "sneaky", m2mv1alpha1.EventWorkloadRestarted); n != 0 {
		t.Fatalf("%d restart events, want none", n)
	}

	// Once its owners opt in, the workload is restarted; the missing target is reported then.
	get(t, bare)
	base := bare.DeepCopy()
	bare.Annotations = map[string]string{m2mv1alpha1.RestartOnRotationAnnotation: "sneaky"}
	if err := env.Client.Patch(ctx, bare, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	obj := restartingClient(ns, "sneaky", "database", "missing")
	get(t, obj)
	objBase := obj.DeepCopy()
	obj.Spec.Rollout = restartingClient(ns, "sneaky", "database", "missing").Spec.Rollout
	if err := tenant.Patch(ctx, obj, client.MergeFrom(objBase)); err != nil {
		t.Fatal(err)
	}
	msg = waitRestartTargets(t, ns, "sneaky", m2mv1alpha1.ReasonRestartTargetNotFound)
	if !strings.Contains(msg, "Deployment missing does not exist") {
		t.Fatalf("the condition says %q", msg)
	}
	get(t, bare)
	if got := bare.Spec.Template.Annotations[m2mv1alpha1.RestartedForAnnotation]; got != "sneaky="+currentVersion(t, ns, "sneaky") {
		t.Fatalf("the Deployment that opted in records %q", got)
	}
}

// The CRD refuses restart targets the manager could not restart safely: another kind (a Pod, a
// Secret), a name that is no object name, the same target twice, and more than 16.
func TestTheCRDRefusesRestartTargetsOutsideTheirBounds(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	seventeen := make([]string, 17)
	for i := range seventeen {
		seventeen[i] = fmt.Sprintf("web-%d", i)
	}
	for sentence, mutate := range map[string]func(*m2mv1alpha1.M2MClient){
		"a Pod":               func(o *m2mv1alpha1.M2MClient) { o.Spec.Rollout.RestartTargets[0].Kind = "Pod" },
		"a Secret":            func(o *m2mv1alpha1.M2MClient) { o.Spec.Rollout.RestartTargets[0].Kind = "Secret" },
		"a name with a slash": func(o *m2mv1alpha1.M2MClient) { o.Spec.Rollout.RestartTargets[0].Name = "other-ns/web" },
		"an empty name":       func(o *m2mv1alpha1.M2MClient) { o.Spec.Rollout.RestartTargets[0].Name = "" },
		"the same target twice": func(o *m2mv1alpha1.M2MClient) {
			o.Spec.Rollout.RestartTargets = append(o.Spec.Rollout.RestartTargets, o.Spec.Rollout.RestartTargets[0])
		},
		"seventeen targets": func(o *m2mv1alpha1.M2MClient) { o.Spec.Rollout = restartingClient(ns, "c", seventeen...).Spec.Rollout },
	} {
		t.Run(sentence, func(t *testing.T) {
			obj := restartingClient(ns, "bounded", "web")
			mutate(obj)
			if err := env.Client.Create(ctx, obj); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.rollout.restartTargets") {
				t.Fatalf("creating a client with %s as a restart target: %v, want Invalid", sentence, err)
			}
		})
	}
	sixteen := restartingClient(ns, "sixteen", seventeen[:16]...)
	sixteen.Spec.Rollout.RestartTargets[1].Kind = m2mv1alpha1.RestartKindStatefulSet
	sixteen.Spec.Rollout.RestartTargets[2].Kind = m2mv1alpha1.RestartKindDaemonSet
	if err := env.Client.Create(ctx, sixteen); err != nil {
		t.Fatalf("16 targets of the three kinds were refused: %v", err)
	}
}
