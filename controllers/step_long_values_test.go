package controllers

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// drainEvents returns the events the fake recorder holds whose reason is reason.
func drainEvents(r *M2MClientReconciler, reason string) []string {
	var got []string
	for {
		select {
		case e := <-r.Recorder.(*events.FakeRecorder).Events:
			if strings.Contains(e, " "+reason+" ") {
				got = append(got, e)
			}
		default:
			return got
		}
	}
}

// A client whose rotate and revoke-previous annotations are over the limit gets its credential as
// any other; status records neither value (the CRD would refuse it), one AnnotationTooLong event says so however often the
// client is reconciled, a shorter value then rotates, and the deleted client is forgotten.
func TestAnAnnotationOverTheLimitIsAnnouncedOnceAndRecordedNowhere(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "uid-1",
		Annotations: map[string]string{m2mv1alpha1.RotateAnnotation: tooLong, m2mv1alpha1.RevokePreviousAnnotation: tooLong}}}
	// As the CRD's maxLength does, refuse a status that records a value over the limit.
	crd := interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
		if m, ok := o.(*m2mv1alpha1.M2MClient); ok && (m2mv1alpha1.TriggerTooLong(m.Status.LastRotateAnnotation) || m2mv1alpha1.TriggerTooLong(m.Status.LastRevokeAnnotation)) {
			return apierrors.NewInvalid(schema.GroupKind{Group: "m2m.dev", Kind: "M2MClient"}, m.Name, field.ErrorList{field.TooLong(field.NewPath("status"), "", m2mv1alpha1.MaxTriggerLength)})
		}
		return c.SubResource(sub).Patch(ctx, o, patch, opts...)
	}}
	r, c := clientReconciler(t, enforcedKeys(t), crd, obj)
	ctx, key := context.Background(), types.NamespacedName{Namespace: "ns", Name: "c"}
	reconcile := func() *m2mv1alpha1.M2MClient {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		got := &m2mv1alpha1.M2MClient{}
		if err := c.Get(ctx, key, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	var got *m2mv1alpha1.M2MClient
	for range 3 {
		got = reconcile()
	}
	if got.Status.LastRotateAnnotation != "" || got.Status.LastRevokeAnnotation != "" {
		t.Fatalf("status records %d and %d characters", len(got.Status.LastRotateAnnotation), len(got.Status.LastRevokeAnnotation))
	}
	if len(got.Status.AcceptedSecrets) != 1 {
		t.Fatalf("the values over the limit rotated: %d accepted entries", len(got.Status.AcceptedSecrets))
	}
	announced := drainEvents(r, m2mv1alpha1.EventAnnotationTooLong)
	if len(announced) != 1 || !strings.Contains(announced[0], "m2m.dev/rotate annotation is over 253 characters") ||
		!strings.Contains(announced[0], "m2m.dev/revoke-previous annotation is over 253 characters") {
		t.Fatalf("announced %q, want one event naming both annotations", announced)
	}

	base := got.DeepCopy()
	got.Annotations[m2mv1alpha1.RotateAnnotation] = "v2"
	if err := c.Patch(ctx, got, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	if got = reconcile(); got.Status.LastRotateAnnotation != "v2" || len(got.Status.AcceptedSecrets) != 2 {
		t.Fatalf("a value within the limit did not rotate: %q, %d entries", got.Status.LastRotateAnnotation, len(got.Status.AcceptedSecrets))
	}
	if again := drainEvents(r, m2mv1alpha1.EventAnnotationTooLong); len(again) != 0 {
		t.Fatalf("the revoke-previous annotation, still ignored, was announced again: %q", again)
	}

	if err := c.Delete(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.ignored.Load(key); ok {
		t.Fatal("the deleted client's announcement is still held")
	}
}
