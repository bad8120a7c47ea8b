package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// expireEntries removes the entries whose grace period has ended, says the client is Ready, and notes
// when the next expiry or scheduled rotation is due, so that the reconcile runs again then.
func (c *clientReconcile) expireEntries(context.Context) (stepResult, error) {
	obj := c.obj
	kept, removed, nextExpiry := credentials.Entries(obj.Status.AcceptedSecrets).Prune(c.now)
	obj.Status.AcceptedSecrets = kept
	obj.Status.NextRotationTime = nil
	c.wake = nextExpiry
	if c.kind == nil {
		setReady(obj, metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady,
			fmt.Sprintf("Secret %s holds the client ID; the client authenticates without a secret (spec.authentication)", secretName(obj)))
		c.claimsFit()
		return proceed, nil
	}
	if removed > 0 {
		c.r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, m2mv1alpha1.EventSecretExpired, "Expire", "%d previous secret(s) reached the end of the grace period and are no longer accepted", removed)
	}
	setReady(obj, metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady, fmt.Sprintf("Secret %s holds accepted credentials", secretName(obj)))
	c.claimsFit()
	if next := nextRotation(obj); !next.IsZero() {
		t := metav1.NewTime(next)
		obj.Status.NextRotationTime = &t
		if c.wake.IsZero() || next.Before(c.wake) {
			c.wake = next
		}
	}
	return proceed, nil
}

// claimsFit says the client is not Ready when its tokenClaims are over the size the token server
// serves: it would get no token.
func (c *clientReconcile) claimsFit() {
	if claimsTooLarge(c.obj) {
		setReady(c.obj, metav1.ConditionFalse, m2mv1alpha1.ReasonClaimsTooLarge,
			fmt.Sprintf("spec.tokenClaims encodes to more than %d bytes; the token server issues this client no token until they are made smaller", m2mv1alpha1.MaxTokenClaimsBytes))
	}
}
