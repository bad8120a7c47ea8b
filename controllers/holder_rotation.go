package controllers

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// startHolderRotation starts (or resumes) a rotation of spec.rotation.holder in the crash-safe
// order of issue: (1) accept the next credential's hash, with the rotation, and persist the
// status; (2) write the credential under the Secret's next_ key. The Secret's own credential, the
// one pods read, is untouched. A crash after (1) leaves a next hash that the Secret does not
// carry, which the next reconcile replaces (holderRotation); the replaced one gets the grace
// period, as an unwritten hash of a scheduled rotation does, in case a lost answer hid a write.
func (c *clientReconcile) startHolderRotation(ctx context.Context, d SecretDecision) error {
	obj := c.obj
	id := obj.Spec.Rotation.Holder.ID
	if st := obj.Status.HolderRotation; st != nil && st.State == m2mv1alpha1.HolderRotationStarted {
		id = st.ID
	}
	value, err := c.kind.Issue()
	if err != nil {
		return err
	}
	entry, err := c.kind.Entry(value, c.now)
	if err != nil {
		return err
	}
	current := c.kind.Fingerprint(string(c.secret.Data[c.kind.DataKey()]))
	entries := credentials.Entries(obj.Status.AcceptedSecrets).ExpireOthers(current, c.now, gracePeriod(obj))
	obj.Status.AcceptedSecrets = entries.Accept(entry)
	obj.Status.HolderRotation = &m2mv1alpha1.HolderRotationStatus{ID: id, State: m2mv1alpha1.HolderRotationStarted, NextHash: entry.Hash}
	if err := c.status.patch(ctx); err != nil {
		return err
	}
	written, err := c.r.writeSecret(ctx, obj, c.secret, c.id, string(c.secret.Data[c.kind.DataKey()]), value)
	if err != nil {
		return c.r.secretWriteFailed(obj, err)
	}
	c.secret = written
	Rotations.WithLabelValues("HolderStart").Inc()
	c.r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, m2mv1alpha1.EventHolderRotation, "Start",
		"%s; both are accepted with no deadline until spec.rotation.holder says Completed or Cancelled for %q", d.Why, id)
	return nil
}

// completeHolderRotation makes the next credential the only one: (1) the Secret carries it as
// its credential and no longer under its next_ key; (2) every other accepted entry is dropped at
// once (the holder has said it switched), which the end of the reconcile persists. A crash after
// (1) leaves the Secret carrying the next credential, which the next reconcile completes.
func (c *clientReconcile) completeHolderRotation(ctx context.Context, d SecretDecision) error {
	obj := c.obj
	st := obj.Status.HolderRotation
	value := string(c.secret.Data[c.kind.DataKey()])
	if c.kind.Fingerprint(value) != st.NextHash {
		value = string(c.secret.Data[nextKey(c.kind)])
		written, err := c.r.writeSecret(ctx, obj, c.secret, c.id, value, "")
		if err != nil {
			return c.r.secretWriteFailed(obj, err)
		}
		c.secret = written
	}
	kept, dropped := credentials.Entries(obj.Status.AcceptedSecrets).Revoke(st.NextHash)
	obj.Status.AcceptedSecrets = kept
	id := st.ID
	obj.Status.HolderRotation = &m2mv1alpha1.HolderRotationStatus{ID: id, State: m2mv1alpha1.HolderRotationCompleted}
	t := metav1.NewTime(c.now)
	obj.Status.LastRotationTime = &t
	c.persisted = append(c.persisted, func() {
		log.FromContext(ctx).Info("holder rotation completed", "rotation", id, "dropped", dropped)
		c.r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, m2mv1alpha1.EventHolderRotation, "Complete",
			"%s (%d dropped); Secret %s carries it as %s", d.Why, dropped, secretName(obj), c.kind.DataKey())
	})
	return nil
}

// cancelHolderRotation discards the next credential: its hash is dropped (unless something else
// already gave it an expiry) and the rotation is recorded as cancelled, which the end of the
// reconcile persists; SyncSecret then removes the next_ key, which nothing accepts any more.
func (c *clientReconcile) cancelHolderRotation(ctx context.Context, d SecretDecision) {
	obj := c.obj
	st := obj.Status.HolderRotation
	id, next := st.ID, st.NextHash
	obj.Status.AcceptedSecrets = slices.DeleteFunc(obj.Status.AcceptedSecrets, func(e m2mv1alpha1.AcceptedSecret) bool {
		return e.Hash == next && e.ExpiresAt == nil
	})
	obj.Status.HolderRotation = &m2mv1alpha1.HolderRotationStatus{ID: id, State: m2mv1alpha1.HolderRotationCancelled}
	c.persisted = append(c.persisted, func() {
		log.FromContext(ctx).Info("holder rotation cancelled", "rotation", id)
		c.r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, m2mv1alpha1.EventHolderRotation, "Cancel", "%s", d.Why)
	})
}

// renderNext puts into secret the next credential of a started rotation of spec.rotation.holder:
// next when it is being written, else the one secret carries, but only while status accepts it
// as the next one and it is not the current value. Anything else under a next_ key goes: a
// cancelled or replaced next credential is refused, and should not be handed out.
func renderNext(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, value, next string) {
	kind := credentials.KindOf(obj)
	keep := next
	if keep == "" && kind != nil {
		keep = string(secret.Data[nextKey(kind)])
	}
	for _, k := range credentials.DataKeys {
		delete(secret.Data, m2mv1alpha1.NextSecretKeyPrefix+k)
	}
	e := holderNext(obj)
	if kind == nil || e == nil || keep == "" || kind.Fingerprint(keep) != e.Hash || value == keep {
		return
	}
	secret.Data[nextKey(kind)] = []byte(keep)
}
