package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// pendingSecret is a credential issued and accepted but not yet written, for the object of uid.
// It is reused only while it may never have been written anywhere: once the Secret is seen
// carrying it, it is forgotten (forgetWritten).
type pendingSecret struct {
	uid         types.UID
	hash, value string
	// revoking: it was issued by a revocation, the only pending credential a revocation reuses;
	// one issued before the revocation was asked for may have been written (a write whose answer
	// was lost) and then leaked with the rest.
	revoking bool
}

// forgetWritten forgets the pending credential of obj when secret carries it: the write that
// failed was stored after all (its answer was lost), so it is the current credential, and
// reusing it would make a later rotation, or a revocation after a leak, issue it again.
func (r *M2MClientReconciler) forgetWritten(obj *m2mv1alpha1.M2MClient, kind credentials.Kind, secret *corev1.Secret) {
	key := client.ObjectKeyFromObject(obj)
	v, ok := r.pending.Load(key)
	if !ok || kind == nil || secret == nil {
		return
	}
	if value := string(secret.Data[kind.DataKey()]); value != "" && kind.Fingerprint(value) == v.(pendingSecret).hash {
		r.pending.Delete(key)
	}
}

// reconcileCredential decides what the client's credential needs (DecideSecret) and does it: issue,
// adopt, or finish a rotation. A client whose Secret carries no credential retires the ones it
// had instead.
func (c *clientReconcile) reconcileCredential(ctx context.Context) (stepResult, error) {
	if c.kind == nil {
		return c.retire(ctx)
	}
	obj := c.obj
	c.r.forgetWritten(obj, c.kind, c.secret)
	d := decideSecret(obj, c.secret, c.kind, c.id, c.now)
	log.FromContext(ctx).V(1).Info("decided", "action", d.Action, "why", d.Why)
	switch d.Action {
	case ActionConflict:
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict, d.Why)
		return stopAndRequeue(foreignSecretRecheck), nil
	case ActionRefuseWeak:
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonWeakSecret, d.Why)
		return stopAndRequeue(0), nil
	case ActionAwaitSource:
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing, d.Why)
		return stopAndRequeue(0), nil
	case ActionRefuseSource:
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretRefused, d.Why)
		// Nothing watches a source refused for the namespace's bound, so no event says when
		// another client of the namespace lets a watch go.
		return stopAndRequeue(foreignSecretRecheck), nil
	}
	if c.kind.Source() != nil {
		c.ignoreRotationAsks()
	}
	obj.Status.ClientID = c.id
	switch {
	case d.Action.Issues():
		written, err := c.issue(ctx, d)
		if err != nil {
			return proceed, err
		}
		c.secret = written
	case d.Action == ActionRecoverStatus || d.Action == ActionAdopt:
		if err := c.adopt(ctx, d); err != nil {
			return proceed, err
		}
	case d.Action == ActionHolderStart:
		if err := c.startHolderRotation(ctx, d); err != nil {
			return proceed, err
		}
	case d.Action == ActionHolderComplete:
		if err := c.completeHolderRotation(ctx, d); err != nil {
			return proceed, err
		}
	case d.Action == ActionHolderCancel:
		c.cancelHolderRotation(ctx, d)
	case d.Action == ActionCompleteRotation:
		c.completeRotation(ctx, string(c.secret.Data[c.kind.DataKey()]), d.Revoke)
	case d.Rotation == RotationDeferred:
		log.FromContext(ctx).Info("rotation deferred", "why", d.Why)
	}
	return proceed, nil
}

// retire ends the credentials of a client that takes none in its Secret any more
// (spec.authentication.clientSecret false): they get the grace period, so that pods that still
// send one keep working until they switch, and then none is accepted. The grace period starts
// first, whatever happens to the Secret: turning secrets off must end the current one even when
// the Secret cannot be written. A revocation asked for drops them all at once instead.
func (c *clientReconcile) retire(ctx context.Context) (stepResult, error) {
	obj := c.obj
	obj.Status.ClientID = c.id
	if h := obj.Status.HolderRotation; h != nil && h.State == m2mv1alpha1.HolderRotationStarted {
		// Its next credential is retired with the rest: nothing is left to complete, and a
		// rotation left Started would refuse every later start.
		obj.Status.HolderRotation = &m2mv1alpha1.HolderRotationStatus{ID: h.ID, State: m2mv1alpha1.HolderRotationCancelled}
	}
	if due, _ := RevocationDue(obj); due || obj.Status.RevocationPending {
		handleRevocationValues(obj)
		if len(obj.Status.AcceptedSecrets) > 0 {
			c.completeRevocation(ctx, "")
		}
	} else if credentials.Entries(obj.Status.AcceptedSecrets).Unexpiring() > 0 {
		obj.Status.AcceptedSecrets = credentials.Entries(obj.Status.AcceptedSecrets).ExpireOthers("", c.now, gracePeriod(obj))
		c.r.Recorder.Eventf(obj, c.secret, corev1.EventTypeNormal, m2mv1alpha1.EventSecretRetired, "Retire",
			"spec.authentication.clientSecret is false: the client secret was removed from Secret %s and is accepted until %s", secretName(obj), c.now.Add(gracePeriod(obj)).UTC().Format(time.RFC3339))
	}
	if d, ok := foreignSecret(&secretView{obj: obj, secret: c.secret, id: c.id}); ok {
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict, d.Why)
		return stopAndRequeue(foreignSecretRecheck), nil
	}
	return proceed, nil
}

// adopt accepts the credential that the Secret carries and status does not (someone wrote it,
// or status was lost). It is accepted even when status is full (a rotation would wait instead):
// the Secret already carries it, and a status over the schema's limit could not be written at
// all.
func (c *clientReconcile) adopt(ctx context.Context, d SecretDecision) error {
	obj := c.obj
	entry, err := c.kind.Entry(d.Secret, c.now)
	if err != nil {
		return err // unreachable: DecideSecret refuses a credential that does not parse
	}
	obj.Status.AcceptedSecrets = credentials.Entries(obj.Status.AcceptedSecrets).MakeRoom(maxAcceptedSecrets).Accept(entry)
	reason := m2mv1alpha1.EventSecretAdopted
	if d.Action == ActionRecoverStatus {
		reason = m2mv1alpha1.EventStatusRecovered
		// With the entry, so that a crash after this write does not revoke or rotate what was
		// recovered: the values present count as handled, as at creation. A client created again
		// from the same manifest (a GitOps replace) keeps its secret.
		handleRevocationValues(obj)
		handleRotationValues(obj)
	}
	if err := c.status.patch(ctx); err != nil {
		return err
	}
	c.completeRotation(ctx, d.Secret, false)
	c.r.Recorder.Eventf(obj, c.secret, corev1.EventTypeNormal, reason, "Adopt", "%s", d.Why)
	return nil
}

// issue gives the client a new credential (to generate, rotate or resume) in the crash-safe
// order: (1) accept its hash and persist the status, (2) write the Secret, (3) start the grace
// period of the previous credentials, which the end of the reconcile persists. A crash after (1)
// leaves a hash that no Secret carries (ActionResumeRotation issues again); after (2), entries
// without expiry (ActionCompleteRotation). No Secret ever carries a credential whose hash is not
// accepted. It returns the Secret as written.
func (c *clientReconcile) issue(ctx context.Context, d SecretDecision) (*corev1.Secret, error) {
	r, obj := c.r, c.obj
	value, err := r.pendingOrNew(obj, c.kind, d.Revoke)
	if err != nil {
		return nil, err
	}
	first := len(obj.Status.AcceptedSecrets) == 0
	before := obj.Status.DeepCopy()
	if first || d.Action == ActionRotate {
		// Values present at creation ask for no rotation. A rotation records the values it acts
		// on with its hash, so that a crash resumes it instead of starting another for them.
		handleRotationValues(obj)
	}
	switch {
	case first:
		handleRevocationValues(obj)
	case d.Revoke:
		startRevocation(obj)
	}
	entry, err := c.kind.Entry(value, c.now)
	if err != nil {
		return nil, err
	}
	entries := credentials.Entries(obj.Status.AcceptedSecrets)
	if d.Revoke || c.kind.Source() != nil {
		// A revocation is never deferred for a full status: the entries it makes room by dropping
		// are in their grace period, which it ends anyway. Nor is a source's new value: the
		// store has it already, and pods that read the source directly send it.
		entries = entries.MakeRoom(maxAcceptedSecrets)
	}
	obj.Status.AcceptedSecrets = entries.Accept(entry)
	if err := c.status.patch(ctx); err != nil {
		return nil, err
	}
	key := client.ObjectKeyFromObject(obj)
	r.pending.Store(key, pendingSecret{uid: obj.UID, hash: entry.Hash, value: value, revoking: d.Revoke})
	written, err := r.writeSecret(ctx, obj, c.secret, c.id, value, "")
	if c.secret == nil && apierrors.IsAlreadyExists(err) {
		r.pending.Delete(key)
		// The credential was written nowhere, so its hash can go again.
		obj.Status.AcceptedSecrets = before.AcceptedSecrets
		obj.Status.LastRotationTrigger, obj.Status.LastRotateAnnotation = before.LastRotationTrigger, before.LastRotateAnnotation
		obj.Status.LastRevokeTrigger, obj.Status.LastRevokeAnnotation = before.LastRevokeTrigger, before.LastRevokeAnnotation
		obj.Status.RevocationPending = before.RevocationPending
		if err := c.status.patch(ctx); err != nil {
			return nil, err
		}
		return nil, errUnseenSecret
	}
	if err != nil {
		return nil, r.secretWriteFailed(obj, err)
	}
	r.pending.Delete(key)
	c.completeRotation(ctx, value, d.Revoke && !first)
	c.issued(d, written, first)
	return written, nil
}

// handleRotationValues records the rotation values that obj asks for as acted on.
func handleRotationValues(obj *m2mv1alpha1.M2MClient) {
	obj.Status.LastRotationTrigger = obj.Spec.Rotation.Trigger
	obj.Status.LastRotateAnnotation, _ = annotationValue(obj, m2mv1alpha1.RotateAnnotation)
}

// issued counts and announces a credential that issue wrote; first: the client's first.
func (c *clientReconcile) issued(d SecretDecision, written *corev1.Secret, first bool) {
	obj := c.obj
	switch {
	case first:
		c.r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, m2mv1alpha1.EventCredentialsCreated, "Create", "client %s: credentials written to Secret %s", c.id, written.Name)
	case d.Revoke:
		// Its event, Revoked, says what the revocation dropped (completeRevocation).
		Rotations.WithLabelValues(string(d.Rotation)).Inc()
	case d.Action == ActionGenerate:
		Rotations.WithLabelValues("Recreated").Inc()
		c.r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, m2mv1alpha1.EventSecretRecreated, "Rotate", "%s: a new secret was written; the previous one expires after %s", d.Why, gracePeriod(obj))
	default:
		Rotations.WithLabelValues(string(d.Rotation)).Inc()
		c.r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, m2mv1alpha1.EventRotated, "Rotate",
			"rotated (%s): %s; the previous secret is accepted until %s", d.Rotation, d.Why, c.now.Add(gracePeriod(obj)).UTC().Format(time.RFC3339))
	}
}

// pendingOrNew returns the credential of an earlier attempt whose hash status still accepts
// without expiry (its write failed, and its Secret was never seen carrying it), if it is of the
// client's kind, else a new one. A revocation reuses only a credential that a revocation issued.
func (r *M2MClientReconciler) pendingOrNew(obj *m2mv1alpha1.M2MClient, kind credentials.Kind, revoke bool) (string, error) {
	key := client.ObjectKeyFromObject(obj)
	if kind.Source() != nil {
		// The source's value is the one to write, whatever an earlier attempt wrote.
		r.pending.Delete(key)
		return kind.Issue()
	}
	if v, ok := r.pending.Load(key); ok {
		if pend := v.(pendingSecret); pend.uid == obj.UID && (pend.revoking || !revoke) {
			for _, e := range obj.Status.AcceptedSecrets {
				if e.Hash == pend.hash && e.ExpiresAt == nil && kind.Fingerprint(pend.value) == pend.hash && kind.Problem(pend.value) == "" {
					return pend.value, nil
				}
			}
		}
		r.pending.Delete(key)
	}
	return kind.Issue()
}

// secretWriteFailed says on the Ready condition that the Secret could not be written, with the
// API server's reason (an immutable Secret, a quota, a webhook), and returns err for a retry.
// A conflict is a race, retried at once, and says nothing.
func (r *M2MClientReconciler) secretWriteFailed(obj *m2mv1alpha1.M2MClient, err error) error {
	if !apierrors.IsConflict(err) {
		RotationFailures.Inc()
		why := ""
		if reason := apierrors.ReasonForError(err); reason != "" {
			why = " (" + string(reason) + ")"
		}
		setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretWriteFailed,
			fmt.Sprintf("writing Secret %s failed%s: %v; the manager retries with the same secret", secretName(obj), why, err))
	}
	return err
}

// completeRotation starts the grace period of every credential but current, or for a revocation
// drops them at once.
func (c *clientReconcile) completeRotation(ctx context.Context, current string, revoke bool) {
	obj := c.obj
	if revoke {
		c.completeRevocation(ctx, c.kind.Fingerprint(current))
		return
	}
	before := obj.Status.AcceptedSecrets
	obj.Status.AcceptedSecrets = credentials.Entries(before).ExpireOthers(c.kind.Fingerprint(current), c.now, gracePeriod(obj))
	if !equality.Semantic.DeepEqual(before, obj.Status.AcceptedSecrets) || obj.Status.LastRotationTime == nil {
		t := metav1.NewTime(c.now)
		obj.Status.LastRotationTime = &t
	}
}

// ignoreRotationAsks records the rotation annotations of a client whose credential comes from a
// source as handled, with a warning: the store is the credential's only origin, so the manager
// rotates nothing for them. Handling them keeps them from acting later, should the client stop
// naming a source.
func (c *clientReconcile) ignoreRotationAsks() {
	obj := c.obj
	rotate, _ := annotationValue(obj, m2mv1alpha1.RotateAnnotation)
	revoke, _ := annotationValue(obj, m2mv1alpha1.RevokePreviousAnnotation)
	if (rotate == "" || rotate == obj.Status.LastRotateAnnotation) && (revoke == "" || revoke == obj.Status.LastRevokeAnnotation) {
		return
	}
	obj.Status.LastRotateAnnotation, obj.Status.LastRevokeAnnotation = rotate, revoke
	c.r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, m2mv1alpha1.EventRotationNotApplicable, "Rotate",
		"the credential comes from Secret %s/%s, which a secret store writes: the manager rotates nothing; change the value in the store (a new value is accepted, and the previous one stays accepted for the grace period)",
		obj.Namespace, obj.Spec.Authentication.Source.Name)
}
