package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

var (
	now     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	current = "current-secret-0123456789abcdefghijklmnop"
	next    = "next-secret-0123456789abcdefghijklmnopqrstu"
	old     = "old-secret-0123456789abcdefghijklmnopqrstuv"
)

func clientWith(entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", UID: "uid-1"}}
	obj.Status.AcceptedSecrets = entries
	if len(entries) > 0 {
		obj.Status.ClientID = "m2m-id"
	}
	return obj
}

func entry(secret string, expiresIn *time.Duration) m2mv1alpha1.AcceptedSecret {
	e := m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(secret), CreatedAt: metav1.NewTime(now.Add(-time.Hour))}
	if expiresIn != nil {
		t := metav1.NewTime(now.Add(*expiresIn))
		e.ExpiresAt = &t
	}
	return e
}

func ownedSecret(value string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "c-credentials", Namespace: "ns", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "m2m.dev/v1alpha1", Kind: "M2MClient", Name: "c", UID: "uid-1", Controller: ptr.To(true),
	}}}}
	if value != "" {
		s.Data = map[string][]byte{m2mv1alpha1.SecretKeyClientSecret: []byte(value), m2mv1alpha1.SecretKeyClientID: []byte("m2m-id")}
	}
	return s
}

func withTrigger(obj *m2mv1alpha1.M2MClient, trigger string) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.Trigger, obj.Status.LastRotationTrigger = trigger, "v1"
	return obj
}

// A rotation is a decision like the others: its reason travels with it, and a due rotation that
// cannot happen yet says so without acting.

func withAnnotation(obj *m2mv1alpha1.M2MClient, value string) *m2mv1alpha1.M2MClient {
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: value}
	return obj
}

// withPeriod sets a rotation period that has passed: the last rotation was twice as long ago.
func withPeriod(obj *m2mv1alpha1.M2MClient, period time.Duration) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.Period = &metav1.Duration{Duration: period}
	last := metav1.NewTime(now.Add(-2 * period))
	obj.Status.LastRotationTime = &last
	return obj
}
