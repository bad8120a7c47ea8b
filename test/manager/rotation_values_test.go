package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// annotationsPatch is a merge patch that sets the annotations given (null removes one).
func annotationsPatch(t *testing.T, annotations map[string]any) client.Patch {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		t.Fatal(err)
	}
	return client.RawPatch(types.MergePatchType, patch)
}

// A tenant who sets a rotate or revoke-previous annotation of 120 KiB on its own client is refused
// at admission, on create and on update, with a message that names the annotation and the bound;
// a value of 253 characters is taken.
func TestATenantsRotationAnnotationOverTheLimitIsRefusedAtAdmission(t *testing.T) {
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	long := strings.Repeat("x", 120<<10)
	for _, annotation := range []string{m2mv1alpha1.RotateAnnotation, m2mv1alpha1.RevokePreviousAnnotation} {
		obj := newClient(ns, "created-long")
		obj.Annotations = map[string]string{annotation: long}
		if err := tenant.Create(ctx, obj); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), annotation+": a value is at most 253 characters") {
			t.Fatalf("creating with a long %s: %v, want Invalid naming it and the bound", annotation, err)
		}
	}
	obj := newClient(ns, "annotated")
	if err := tenant.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	for _, annotation := range []string{m2mv1alpha1.RotateAnnotation, m2mv1alpha1.RevokePreviousAnnotation} {
		err := tenant.Patch(ctx, obj, annotationsPatch(t, map[string]any{annotation: long}))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), annotation+": a value is at most 253 characters") {
			t.Fatalf("annotating %s with 120 KiB: %v, want Invalid naming it and the bound", annotation, err)
		}
		if err := tenant.Patch(ctx, obj, annotationsPatch(t, map[string]any{annotation: strings.Repeat("x", 253)})); err != nil {
			t.Fatalf("a value of 253 characters was refused: %v", err)
		}
	}
}

// Where the policy is not installed, a tenant's client with 120 KiB in both annotations is
// neither rotated nor revoked for them, status records neither (the CRD would refuse the manager
// a status that did), the token server's cache holds none of them, and an AnnotationTooLong event
// says why; a short value then rotates.
func TestWithoutThePolicyNeitherStatusNorTheTokenServersCacheHoldsALongAnnotation(t *testing.T) {
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	withoutPolicy(t, "m2m-rotation-annotations", func() error {
		return tenant.Create(ctx, rotationProbe(ns), client.DryRunAll)
	})
	obj := newClient(ns, "long-values")
	if err := tenant.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "long-values", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	long := strings.Repeat("x", 120<<10)
	if err := tenant.Patch(ctx, obj, annotationsPatch(t, map[string]any{m2mv1alpha1.RotateAnnotation: long, m2mv1alpha1.RevokePreviousAnnotation: long})); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, ns, "long-values", m2mv1alpha1.EventAnnotationTooLong, 1)

	if err := tenant.Patch(ctx, obj, annotationsPatch(t, map[string]any{m2mv1alpha1.RotateAnnotation: "v2"})); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		get(t, obj)
		if obj.Status.LastRotateAnnotation != "v2" || len(obj.Status.AcceptedSecrets) != 2 || credentials.Entries(obj.Status.AcceptedSecrets).Unexpiring() != 1 {
			return fmt.Errorf("not rotated for the short value yet: %q, %d entries", obj.Status.LastRotateAnnotation, len(obj.Status.AcceptedSecrets))
		}
		return nil
	})
	if n := len(obj.Status.LastRevokeAnnotation); n != 0 || obj.Status.LastRevocationTime != nil {
		t.Fatalf("the long revoke-previous value was acted on (%d characters recorded)", n)
	}

	ts, err := tokenserver.NewInformerClients(env.Config, []string{ns}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	tsCtx, stop := context.WithCancel(ctx)
	defer stop()
	ts.Start(tsCtx)
	if err := ts.WaitForSync(tsCtx); err != nil {
		t.Fatal(err)
	}
	cached := ts.Candidates(obj.Status.ClientID)
	if len(cached) != 1 {
		t.Fatalf("the token server's cache has %d clients of ID %s", len(cached), obj.Status.ClientID)
	}
	// The cache's CachedClient has no field for annotations or the recorded values: holding the
	// client is what is left to check.
	if c := cached[0]; c.Name != obj.Name || c.Namespace != obj.Namespace {
		t.Fatalf("the token server's cache holds %s/%s for %s/%s", c.Namespace, c.Name, obj.Namespace, obj.Name)
	}
}

// rotationProbe is a client that the policy m2m-rotation-annotations refuses.
func rotationProbe(ns string) *m2mv1alpha1.M2MClient {
	obj := newClient(ns, "rotation-probe")
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: strings.Repeat("x", 254)}
	return obj
}

// withoutPolicy removes the binding of the admission policy name until the test ends, waiting
// until allowed (a write the policy refuses) succeeds, and then until the restored policy refuses
// it again, so that later tests have the suite's policies.
func withoutPolicy(t *testing.T, name string, allowed func() error) {
	t.Helper()
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	binding.Name = name
	get(t, binding)
	kept := binding.DeepCopy()
	kept.ResourceVersion = ""
	if err := env.Client.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Client.Create(ctx, kept); err != nil {
			t.Error(err)
			return
		}
		testenv.Eventually(t, wait, func() error {
			if err := allowed(); !apierrors.IsInvalid(err) {
				return fmt.Errorf("the restored policy %s does not refuse yet: %v", name, err)
			}
			return nil
		})
	})
	testenv.Eventually(t, wait, allowed)
}

// Whoever writes status cannot put a long value into what status records as acted on: the CRD
// bounds those fields as it bounds the triggers.
func TestTheCRDRefusesALongValueActedOnInStatus(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "long-status"))
	obj := waitReady(t, ns, "long-status", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	for _, field := range []string{"lastRotationTrigger", "lastRotateAnnotation", "lastRevokeTrigger", "lastRevokeAnnotation"} {
		patch := fmt.Sprintf(`{"status":{%q:%q}}`, field, strings.Repeat("x", 254))
		if err := statusWriter(t).Status().Patch(ctx, obj.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch))); !apierrors.IsInvalid(err) {
			t.Fatalf("status.%s of 254 characters: %v, want Invalid", field, err)
		}
	}
}
