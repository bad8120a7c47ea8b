package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// startRevocation records, with the hash of the credential that a revocation issues (step 1 of
// issue), the values it acts on and that it is in progress: a manager that dies before the end
// then finishes this revocation (DecideSecret's revocation rule) instead of starting another for
// the same values or giving the earlier credentials a grace period.
func startRevocation(obj *m2mv1alpha1.M2MClient) {
	handleRevocationValues(obj)
	obj.Status.RevocationPending = true
}

// handleRevocationValues records the revocation values present as acted on. Alone (at creation,
// and when status is rebuilt after a loss) it revokes nothing: a client restored from a backup
// with its values is not revoked again.
func handleRevocationValues(obj *m2mv1alpha1.M2MClient) {
	obj.Status.LastRevokeTrigger = obj.Spec.Rotation.RevokeTrigger
	obj.Status.LastRevokeAnnotation, _ = annotationValue(obj, m2mv1alpha1.RevokePreviousAnnotation)
	obj.Status.RevocationPending = false
}

// completeRevocation ends a revocation: every accepted entry but the one of hash current (the
// credential the Secret now carries; none for a client that takes no credential in its Secret)
// is dropped at once, those in their grace period too. The end of the reconcile persists it in
// one status write, with revocationPending cleared, and only then is it announced.
func (c *clientReconcile) completeRevocation(ctx context.Context, current string) {
	obj := c.obj
	kept, dropped := credentials.Entries(obj.Status.AcceptedSecrets).Revoke(current)
	obj.Status.AcceptedSecrets = kept
	obj.Status.RevocationPending = false
	t := metav1.NewTime(c.now)
	obj.Status.LastRevocationTime, obj.Status.LastRotationTime = &t, t.DeepCopy()
	state := fmt.Sprintf("Secret %s carries the new one, and pods that still hold an earlier one are refused until they read it again", secretName(obj))
	if current == "" {
		state = "the client takes no credential in its Secret (spec.authentication)"
	}
	c.persisted = append(c.persisted, func() {
		log.FromContext(ctx).Info("revoked every earlier credential", "dropped", dropped, "secret", secretName(obj))
		c.r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, m2mv1alpha1.EventRevoked, "Revoke",
			"%d earlier credential(s) are no longer accepted; %s. Tokens already issued stay valid until they expire (at most spec.tokenTTL)", dropped, state)
	})
}
