package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The manager's own Secrets (the signing keys, the CA, the serving certificate) are written the
// same way whether they exist or not: what a Secret should hold is computed from what it holds,
// a missing one holding nothing, and one write creates it or updates it. So no Secret has a
// creation path that differs from its update path.

// readOwnSecret reads a Secret from the cache, or from the API server when the cache lacks it (a
// Secret restored without the manager's label, or another issuer's); nil when there is none.
func readOwnSecret(ctx context.Context, cache, api client.Reader, key types.NamespacedName) (*corev1.Secret, error) {
	s, err := getSecretOrNil(ctx, cache, key)
	if s == nil && err == nil {
		return getSecretOrNil(ctx, api, key)
	}
	return s, err
}

// getSecretOrNil reads the Secret of key from r; nil when there is none.
func getSecretOrNil(ctx context.Context, r client.Reader, key types.NamespacedName) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := r.Get(ctx, key, s); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return s, nil
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
