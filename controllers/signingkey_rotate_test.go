package controllers

import (
	"context"
	"errors"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// keyReconciler is the signing-key controller on one fake client that keeps its objects from one
// reconcile to the next; writes counts the Secret writes.
type keyReconciler struct {
	r      *SigningKeyReconciler
	c      client.Client
	writes int
}

func newKeyReconciler(t *testing.T, funcs interceptor.Funcs) *keyReconciler {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = m2mv1alpha1.AddToScheme(scheme)
	k := &keyReconciler{}
	update := funcs.Update
	funcs.Update = func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
		k.writes++
		if update != nil {
			return update(ctx, c, o, opts...)
		}
		return c.Update(ctx, o, opts...)
	}
	k.c = fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(funcs).Build()
	k.r = &SigningKeyReconciler{Client: k.c, APIReader: k.c, Clock: clocktesting.NewFakeClock(now), Secret: keyRef, Policy: signingkeys.DefaultPolicy, StatusKeyPeriod: statusmac.DefaultPeriod}
	k.reconcile(t)
	return k
}

func (k *keyReconciler) reconcile(t *testing.T) error {
	t.Helper()
	_, err := k.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: keyRef})
	return err
}

func (k *keyReconciler) secret(t *testing.T) (*corev1.Secret, *signingkeys.Set, *statusmac.Set) {
	t.Helper()
	s := &corev1.Secret{}
	if err := k.c.Get(context.Background(), keyRef, s); err != nil {
		t.Fatal(err)
	}
	set, status, err := keySets(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, set, status
}

func (k *keyReconciler) annotate(t *testing.T, name, value string) {
	t.Helper()
	s, _, _ := k.secret(t)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[name] = value
	if err := k.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func TestTheRotateAnnotationPublishesASuccessorOnceForEachValue(t *testing.T) {
	k := newKeyReconciler(t, interceptor.Funcs{})
	_, before, _ := k.secret(t)
	k.annotate(t, keyring.RotateAnnotation, "v1")
	if err := k.reconcile(t); err != nil {
		t.Fatal(err)
	}
	s, set, _ := k.secret(t)
	if len(set.Keys) != 2 || set.Active().KID != before.Active().KID || set.Keys[1].State != signingkeys.StateNext {
		t.Fatalf("keys %+v", set.Keys)
	}
	if at := set.Keys[1].SignsFrom; at == nil || !at.Equal(now.Add(signingkeys.DefaultPolicy.Prepublish)) {
		t.Fatalf("the successor signs from %v, want the prepublish time from now", at)
	}
	if s.Annotations[keyring.RotatedAnnotation] != "v1" {
		t.Fatalf("annotations %v", s.Annotations)
	}
	// The same value again, and more reconciles, change nothing.
	k.annotate(t, keyring.RotateAnnotation, "v1")
	for range 3 {
		if err := k.reconcile(t); err != nil {
			t.Fatal(err)
		}
	}
	if _, again, _ := k.secret(t); len(again.Keys) != 2 || again.Keys[1].KID != set.Keys[1].KID {
		t.Fatalf("one value rotated twice: %+v", again.Keys)
	}
}

// An emergency is one write: every signing key replaced, the status keys' successor published,
// and the value recorded, so that a crash does all of it or none.
func TestTheEmergencyAnnotationReplacesEverySigningKeyAndStartsAStatusKeyRotationInOneWrite(t *testing.T) {
	k := newKeyReconciler(t, interceptor.Funcs{})
	k.annotate(t, keyring.RotateAnnotation, "planned") // a next key, which an emergency must drop too
	if err := k.reconcile(t); err != nil {
		t.Fatal(err)
	}
	_, before, statusBefore := k.secret(t)
	k.annotate(t, keyring.EmergencyAnnotation, "e1")
	k.writes = 0
	if err := k.reconcile(t); err != nil {
		t.Fatal(err)
	}
	s, set, status := k.secret(t)
	if k.writes != 1 {
		t.Fatalf("%d writes, want one", k.writes)
	}
	if len(set.Keys) != 1 || set.Active() == nil || before.Find(set.Active().KID) != nil {
		t.Fatalf("keys %+v, before %+v", set.Keys, before.Keys)
	}
	if s.Annotations[keyring.EmergencyRotatedAnnotation] != "e1" {
		t.Fatalf("annotations %v", s.Annotations)
	}
	if status.Active().ID != statusBefore.Active().ID || len(status.Keys) != 2 || !status.Enforced() {
		t.Fatalf("the status keys changed otherwise than by publishing a successor: %+v", status.Keys)
	}
	k.writes = 0
	for range 3 {
		if err := k.reconcile(t); err != nil {
			t.Fatal(err)
		}
	}
	if _, again, _ := k.secret(t); k.writes != 0 || again.Active().KID != set.Active().KID {
		t.Fatalf("one emergency value rotated again (%d writes)", k.writes)
	}
}

// A write that fails records nothing: the rotation is still asked for, and the next reconcile does it.
func TestAnEmergencySigningKeyRotationWhoseWriteFailsIsStillAskedFor(t *testing.T) {
	fail := true
	k := newKeyReconciler(t, interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
		if s, ok := o.(*corev1.Secret); ok && fail && s.Annotations[keyring.EmergencyRotatedAnnotation] != "" {
			return errors.New("the API server went away")
		}
		return c.Update(ctx, o, opts...)
	}})
	_, before, _ := k.secret(t)
	k.annotate(t, keyring.EmergencyAnnotation, "e1")
	if err := k.reconcile(t); err == nil {
		t.Fatal("the failed write was not reported")
	}
	s, _, _ := k.secret(t)
	if keyring.AskOf(s.Annotations) != keyring.AskEmergency {
		t.Fatalf("annotations %v", s.Annotations)
	}
	fail = false
	if err := k.reconcile(t); err != nil {
		t.Fatal(err)
	}
	s, set, _ := k.secret(t)
	if set.Find(before.Active().KID) != nil || !maps.Equal(s.Annotations, keyring.Acted(s.Annotations)) {
		t.Fatalf("keys %+v, annotations %v", set.Keys, s.Annotations)
	}
}
