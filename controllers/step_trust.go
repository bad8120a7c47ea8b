package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// trustStatus keeps of the client's status what the manager vouches for (TrustStatus). What it
// discards was written by someone else; the steps after it rebuild status as if it had been
// lost.
func (c *clientReconcile) trustStatus(ctx context.Context) (stepResult, error) {
	obj := c.obj
	t := TrustStatus(obj, c.keys, c.now)
	if t.ClientID != obj.Status.ClientID {
		obj.Status.ClientIDMAC = ""
	}
	obj.Status.ClientID, obj.Status.AcceptedSecrets = t.ClientID, t.Entries
	if t.Discarded > 0 {
		c.r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, m2mv1alpha1.EventStatusDiscarded, "Authenticate",
			"%d status field(s) the manager did not write (no valid MAC) were discarded; credentials are rebuilt from the client's binding and Secret", t.Discarded)
	}
	if t.Migrated > 0 {
		log.FromContext(ctx).V(1).Info("authenticating status written before MACs", "entries", t.Migrated)
	}
	return proceed, nil
}
