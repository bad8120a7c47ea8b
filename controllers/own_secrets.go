package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The manager's own Secrets (the signing keys, the CA, the serving certificate) are written the
// same way whether they exist or not: what a Secret should hold is computed from what it holds,
// a missing one holding nothing, and one write creates it or updates it. So no Secret has a
// creation path that differs from its update path.

// readOwnSecret reads a Secret from the cache, or from the API server when the cache lacks it (a
// Secret restored without the manager's label); nil when there is none.
func readOwnSecret(ctx context.Context, cache, api client.Reader, key types.NamespacedName) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := cache.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		err = api.Get(ctx, key, s)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return s, err
}

// editOwnSecret returns a copy of s to change, or, when there is none, an empty Secret of key and
// typ that writeOwnSecret will create.
func editOwnSecret(s *corev1.Secret, key types.NamespacedName, typ corev1.SecretType) *corev1.Secret {
	if s == nil {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Type: typ}
	} else {
		s = s.DeepCopy()
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	return s
}

// writeOwnSecret creates s when it was never written (it has no resourceVersion: editOwnSecret made
// it) and updates it otherwise, guarded by its resourceVersion. created says which.
func writeOwnSecret(ctx context.Context, c client.Writer, s *corev1.Secret) (created bool, err error) {
	if s.ResourceVersion == "" {
		return true, c.Create(ctx, s)
	}
	return false, c.Update(ctx, s)
}
