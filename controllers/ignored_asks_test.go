package controllers

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// annotationsLimit refuses, as the API server does, a Secret whose annotations are over 256 KiB.
var annotationsLimit = interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
	size := 0
	for k, v := range o.GetAnnotations() {
		size += len(k) + len(v)
	}
	if size > 256<<10 {
		return apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, o.GetName(), field.ErrorList{field.TooLong(field.NewPath("metadata", "annotations"), "", 256<<10)})
	}
	return c.Update(ctx, o, opts...)
}}

// An administrator's emergency value of 150 KiB, which recorded beside itself would be over the
// API server's limit on annotations and fail every write of the Secret, asks for nothing: the
// keys keep their schedule, a later short value still rotates, and the error that says why is
// logged once for the value, not on every reconcile.
func TestASigningKeySecretWithAnEmergencyValueOverTheLimitKeepsItsScheduledLifecycle(t *testing.T) {
	k := newKeyReconciler(t, annotationsLimit)
	_, before, _ := k.secret(t)
	k.annotate(t, keyring.EmergencyAnnotation, strings.Repeat("x", 150<<10))
	var errs []string
	// funcr gives Info lines a level and Error lines none.
	ctx := log.IntoContext(context.Background(), funcr.NewJSON(func(obj string) {
		if !strings.Contains(obj, `"level"`) {
			errs = append(errs, obj)
		}
	}, funcr.Options{}))
	reconcile := func() {
		t.Helper()
		if _, err := k.r.Reconcile(ctx, ctrl.Request{NamespacedName: keyRef}); err != nil {
			t.Fatalf("the reconcile failed: %v", err)
		}
	}
	for range 3 {
		reconcile()
	}
	if _, set, _ := k.secret(t); set.Active().KID != before.Active().KID || len(set.Keys) != 1 {
		t.Fatalf("the value over the limit replaced the keys: %+v", set.Keys)
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "m2m.dev/rotate-emergency annotation of Secret m2m-system/m2m-signing-keys is over 253 characters and is ignored") {
		t.Fatalf("logged %d errors, want one naming the annotation and the limit: %q", len(errs), errs)
	}

	// The schedule: a successor is published the prepublish time before the active key's period ends.
	policy := signingkeys.DefaultPolicy
	k.r.Clock.(*clocktesting.FakeClock).Step(policy.Period - policy.Prepublish)
	reconcile()
	s, set, _ := k.secret(t)
	if len(set.Keys) != 2 || set.Keys[1].State != signingkeys.StateNext || set.Keys[1].SignsFrom != nil {
		t.Fatalf("no successor was published on schedule: %+v", set.Keys)
	}
	if _, recorded := s.Annotations[keyring.EmergencyRotatedAnnotation]; recorded {
		t.Fatal("the value over the limit was recorded")
	}

	k.annotate(t, keyring.RotateAnnotation, "v1")
	k.r.Clock.(*clocktesting.FakeClock).Step(time.Hour)
	reconcile()
	if s, _, _ := k.secret(t); s.Annotations[keyring.RotatedAnnotation] != "v1" {
		t.Fatalf("a later short value did not rotate: %v", s.Annotations[keyring.RotatedAnnotation])
	}
	if len(errs) != 1 {
		t.Fatalf("the same value was logged %d times", len(errs))
	}
}

// The CA and serving-certificate Secrets take the same annotations: values of 150 KiB on both
// replace no CA, and the certificate is still renewed on schedule, with neither value recorded.
func TestCAAndCertificateSecretsWithValuesOverTheLimitKeepTheirScheduledLifecycle(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithInterceptorFuncs(annotationsLimit).Build()
	caRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-ca"}
	certRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
	clk := clocktesting.NewFakeClock(now)
	r := &ServingCertReconciler{Client: c, APIReader: c, Clock: clk, CASecret: caRef, CertSecret: certRef, Hosts: []string{"m2m-token-server.m2m-system.svc"}, Policy: servingcert.DefaultPolicy}
	reconcile := func() {
		t.Helper()
		for range 3 {
			if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: certRef}); err != nil {
				t.Fatalf("the reconcile failed: %v", err)
			}
		}
	}
	get := func(key types.NamespacedName) *corev1.Secret {
		t.Helper()
		s := &corev1.Secret{}
		if err := c.Get(ctx, key, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	reconcile()
	long := strings.Repeat("x", 150<<10)
	for key, annotation := range map[types.NamespacedName]string{caRef: keyring.EmergencyAnnotation, certRef: keyring.RotateAnnotation} {
		s := get(key)
		s.Annotations = map[string]string{annotation: long}
		if err := c.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	ca, cert := get(caRef), get(certRef)
	reconcile()
	if !bytes.Equal(get(caRef).Data[servingcert.CACert], ca.Data[servingcert.CACert]) {
		t.Fatal("the value over the limit replaced the CA")
	}
	clk.Step(servingcert.DefaultPolicy.CertValidity * 2 / 3)
	reconcile()
	renewed := get(certRef)
	if bytes.Equal(renewed.Data[servingcert.TLSCert], cert.Data[servingcert.TLSCert]) {
		t.Fatal("the certificate was not renewed on schedule")
	}
	if _, recorded := renewed.Annotations[keyring.RotatedAnnotation]; recorded {
		t.Fatal("the certificate Secret recorded the value over the limit")
	}
	if _, recorded := get(caRef).Annotations[keyring.EmergencyRotatedAnnotation]; recorded {
		t.Fatal("the CA Secret recorded the value over the limit")
	}
}
