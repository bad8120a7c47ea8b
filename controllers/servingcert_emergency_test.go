package controllers

import (
	"bytes"
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// An emergency on a CA Secret that holds a CA, a next CA and a previous CA is one write of the CA
// Secret: a new CA signs, alone in the bundle, and the value is recorded (with a planned
// rotation asked at the same time, which the new CA makes moot). A reconciler that starts after
// that write, as after a crash between the two writes, issues the certificate from the new CA
// because the one served is of another CA; the same value then writes nothing.
func TestAnEmergencyReplacesEveryCAInOneWriteAndTheNextReconcileReissuesTheCertificate(t *testing.T) {
	ctx := context.Background()
	caRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-ca"}
	certRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
	hosts := []string{"m2m-token-server.m2m-system.svc"}
	p := servingcert.DefaultPolicy
	old, next, previous := mustNewCA(t), mustNewCA(t), mustNewCA(t)
	cert, err := servingcert.Issue(old, hosts, now, p.CertValidity)
	if err != nil {
		t.Fatal(err)
	}
	bundle := servingcert.BundleOf(old.CertPEM, next.CertPEM, previous.CertPEM)
	labels := map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue}
	caSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: caRef.Namespace, Name: caRef.Name, Labels: labels, Annotations: map[string]string{
			servingcert.NextSinceAnnotation:     now.Add(-time.Hour).Format(time.RFC3339),
			servingcert.PreviousUntilAnnotation: now.Add(time.Hour).Format(time.RFC3339),
			keyring.RotateAnnotation:            "planned",
			keyring.EmergencyAnnotation:         "e1",
		}},
		Data: map[string][]byte{
			servingcert.CACert: old.CertPEM, servingcert.CAKey: old.KeyPEM, servingcert.NextCert: next.CertPEM, servingcert.NextKey: next.KeyPEM,
			servingcert.PreviousCert: previous.CertPEM, servingcert.Bundle: bundle,
		},
	}
	certSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: certRef.Namespace, Name: certRef.Name, Labels: labels},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{servingcert.TLSCert: cert.CertPEM, servingcert.TLSKey: cert.KeyPEM, servingcert.TLSCA: bundle},
	}
	writes := map[string]int{}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(caSecret, certSecret).WithInterceptorFuncs(interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			writes[o.GetName()]++
			return c.Update(ctx, o, opts...)
		},
	}).Build()
	reconciler := func() *ServingCertReconciler {
		return &ServingCertReconciler{Client: c, APIReader: c, Clock: clocktesting.NewFakeClock(now), CASecret: caRef, CertSecret: certRef, Hosts: hosts, Policy: p}
	}
	reconcile := func(r *ServingCertReconciler) {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: certRef}); err != nil {
			t.Fatal(err)
		}
	}

	reconcile(reconciler())
	ca := &corev1.Secret{}
	if err := c.Get(ctx, caRef, ca); err != nil {
		t.Fatal(err)
	}
	if writes[caRef.Name] != 1 || writes[certRef.Name] != 0 {
		t.Fatalf("writes %v; want the CA Secret's alone", writes)
	}
	newCA, err := servingcert.Parse(ca.Data[servingcert.CACert], ca.Data[servingcert.CAKey])
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range [][]byte{old.CertPEM, next.CertPEM, previous.CertPEM} {
		if bytes.Contains(ca.Data[servingcert.CACert], bytes.TrimSpace(gone)) || bytes.Contains(ca.Data[servingcert.Bundle], bytes.TrimSpace(gone)) {
			t.Fatal("a CA of the Secret before the emergency still signs or is in the bundle")
		}
	}
	if !bytes.Equal(ca.Data[servingcert.Bundle], servingcert.BundleOf(newCA.CertPEM)) || len(ca.Data[servingcert.NextCert])+len(ca.Data[servingcert.NextKey])+len(ca.Data[servingcert.PreviousCert]) != 0 {
		t.Fatalf("the CA Secret holds %d keys; want the new CA alone, in the bundle too", len(ca.Data))
	}
	a := ca.Annotations
	if a[keyring.EmergencyRotatedAnnotation] != "e1" || a[keyring.RotatedAnnotation] != "planned" || a[servingcert.NextSinceAnnotation] != "" || a[servingcert.PreviousUntilAnnotation] != "" {
		t.Fatalf("annotations %v", a)
	}

	restarted := reconciler()
	reconcile(restarted)
	got := &corev1.Secret{}
	if err := c.Get(ctx, certRef, got); err != nil {
		t.Fatal(err)
	}
	kp, err := servingcert.Parse(got.Data[servingcert.TLSCert], got.Data[servingcert.TLSKey])
	if err != nil || kp.Cert.CheckSignatureFrom(newCA.Cert) != nil || !bytes.Equal(got.Data[servingcert.TLSCA], ca.Data[servingcert.Bundle]) {
		t.Fatalf("after the restart the certificate is not the new CA's, with its bundle: %v", err)
	}

	before := writes[caRef.Name] + writes[certRef.Name]
	for range 3 {
		reconcile(restarted)
	}
	if after := writes[caRef.Name] + writes[certRef.Name]; after != before {
		t.Fatalf("the emergency value already acted on wrote %d times more", after-before)
	}
}

// An emergency whose CA Secret write fails (a conflict, an API server away) is still asked for:
// the value is recorded only by the write that replaces the CA, never by a write of its own.
func TestAnEmergencyCARotationWhoseWriteFailsIsStillAskedFor(t *testing.T) {
	ctx := context.Background()
	caRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-ca"}
	certRef := types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
	old := mustNewCA(t)
	caSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: caRef.Namespace, Name: caRef.Name, Annotations: map[string]string{keyring.EmergencyAnnotation: "e1"},
			Labels: map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue}},
		Data: map[string][]byte{servingcert.CACert: old.CertPEM, servingcert.CAKey: old.KeyPEM, servingcert.Bundle: servingcert.BundleOf(old.CertPEM)},
	}
	fail := true
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(caSecret).WithInterceptorFuncs(interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			if s, ok := o.(*corev1.Secret); ok && fail && !bytes.Equal(s.Data[servingcert.CACert], old.CertPEM) {
				return context.DeadlineExceeded
			}
			return c.Update(ctx, o, opts...)
		},
	}).Build()
	r := &ServingCertReconciler{Client: c, APIReader: c, Clock: clocktesting.NewFakeClock(now), CASecret: caRef, CertSecret: certRef,
		Hosts: []string{"m2m-token-server.m2m-system.svc"}, Policy: servingcert.DefaultPolicy}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: certRef}); err == nil {
		t.Fatal("a failed write was not an error")
	}
	fail = false
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: certRef}); err != nil {
		t.Fatal(err)
	}
	got := &corev1.Secret{}
	if err := c.Get(ctx, caRef, got); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got.Data[servingcert.CACert], old.CertPEM) || got.Annotations[keyring.EmergencyRotatedAnnotation] != "e1" {
		t.Fatal("the emergency was not done after its first write failed")
	}
}

func mustNewCA(t *testing.T) *servingcert.KeyPair {
	t.Helper()
	ca, err := servingcert.NewCA(now, servingcert.DefaultPolicy.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
