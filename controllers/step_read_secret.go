package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// readSecret reads the client's Secret (getSecret).
func (c *clientReconcile) readSecret(ctx context.Context) (stepResult, error) {
	secret, err := c.r.getSecret(ctx, c.obj)
	c.secret = secret
	return proceed, err
}

// getSecret returns the client's Secret, or nil when there is none. The cache holds only Secrets
// with the managed-by label, so a miss there is confirmed with a direct read, so that an
// unlabelled Secret of that name is seen (and never overwritten). A brand-new client skips that
// read: creating its Secret fails if one of that name exists, and then it reads (errUnseenSecret).
func (r *M2MClientReconciler) getSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: obj.Namespace, Name: secretName(obj)}
	switch {
	case credentials.Entries(obj.Status.AcceptedSecrets).Unexpiring() > 1:
		// A rotation is in progress: which step it is in depends on what the Secret carries, so
		// that is read from the API server, never from a cache that may lag.
		return r.directSecret(ctx, obj)
	case len(obj.Status.AcceptedSecrets) == 0 && len(obj.Status.Conditions) == 0:
		return getSecretOrNil(ctx, r.Client, key)
	}
	return readOwnSecret(ctx, r.Client, r.APIReader, key)
}

// directSecret reads the client's Secret from the API server, bypassing the cache.
func (r *M2MClientReconciler) directSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient) (*corev1.Secret, error) {
	return getSecretOrNil(ctx, r.APIReader, types.NamespacedName{Namespace: obj.Namespace, Name: secretName(obj)})
}
