package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/sourcewatch"
)

// readSource reads what the source Secret of spec.authentication.source holds (sourcewatch), and
// makes the client's kind the Sourced one of it. Until the watch of its namespace has listed the
// Secrets once, the reconcile stops; the watch wakes it.
func (c *clientReconcile) readSource(ctx context.Context) (stepResult, error) {
	obj, key := c.obj, client.ObjectKeyFromObject(c.obj)
	spec := obj.Spec.Authentication.Source
	if spec == nil || c.kind == nil {
		c.r.Sources.Release(key)
		return proceed, nil
	}
	src := sourcewatch.Source{Namespace: obj.Namespace, Name: spec.Name, Key: m2mv1alpha1.SourceKey(obj)}
	supply := credentials.Supply{Secret: obj.Namespace + "/" + spec.Name, Key: src.Key}
	if spec.Name == secretName(obj) {
		c.r.Sources.Release(key)
		supply.Refused = "it is the client's own credentials Secret, which the manager writes"
		c.kind = credentials.Sourced{Kind: c.kind, Supply: supply}
		return proceed, nil
	}
	if c.r.Sources == nil {
		supply.Refused = "this manager watches no source Secrets"
		c.kind = credentials.Sourced{Kind: c.kind, Supply: supply}
		return proceed, nil
	}
	got, err := c.r.Sources.Want(ctx, key, src)
	var tooMany *sourcewatch.ErrTooManySources
	switch {
	case errors.As(err, &tooMany):
		supply.Refused = err.Error()
	case err != nil:
		return proceed, err
	case !got.Synced:
		return stopAndRequeue(0), nil
	case got.WrittenByManager:
		supply.Refused = "it is a Secret that the manager writes (another client's credentials), not a secret store's"
	case !got.Exists:
		supply.Missing = fmt.Sprintf("Secret %s does not exist", supply.Secret)
	case !slices.Contains(optedInClients(got.OptIn), obj.Name):
		supply.Refused = fmt.Sprintf("its %s annotation does not name this client; whoever writes the Secret adds it (the secret store's template), so that no client takes a Secret of the namespace not meant for it", m2mv1alpha1.SourceForAnnotation)
	case got.Size > credentials.MaxSourceValueBytes:
		supply.Refused = fmt.Sprintf("its entry %s holds %d bytes, over the %d a source entry may hold", src.Key, got.Size, credentials.MaxSourceValueBytes)
	case got.Value == "":
		supply.Missing = fmt.Sprintf("Secret %s has no entry %s, or it is empty", supply.Secret, src.Key)
	default:
		supply.Value = got.Value
	}
	c.kind = credentials.Sourced{Kind: c.kind, Supply: supply}
	return proceed, nil
}
