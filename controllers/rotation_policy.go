package controllers

import (
	"fmt"
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// RotationReason says why a rotation is due.
type RotationReason string

const (
	// RotationNotDue: nothing asks for a rotation.
	RotationNotDue RotationReason = ""
	// RotationScheduled: lastRotationTime + rotation.period has been reached.
	RotationScheduled RotationReason = "Scheduled"
	// RotationTrigger: spec.rotation.trigger has a value not acted on yet.
	RotationTrigger RotationReason = "Trigger"
	// RotationAnnotation: the m2m.dev/rotate annotation has a value not acted on yet.
	RotationAnnotation RotationReason = "Annotation"
	// RotationDeferred: a rotation is asked for, but status already holds as many secrets as it
	// may; it waits until the oldest expire.
	RotationDeferred RotationReason = "Deferred"
	// RotationResumed: a rotation that a crash interrupted goes on.
	RotationResumed RotationReason = "Resumed"
	// RotationAlgorithm: spec.authentication.keyPair.algorithm is not the current key's.
	RotationAlgorithm RotationReason = "Algorithm"
	// RotationRevoke: spec.rotation.revokeTrigger or the m2m.dev/revoke-previous annotation has a
	// value not acted on yet; the rotation also drops every earlier credential (RevocationDue).
	RotationRevoke RotationReason = "Revoke"
)

// maxAcceptedSecrets is the size of status.acceptedSecrets that a rotation will not grow past.
const maxAcceptedSecrets = 100

// RotationDue says whether obj's secret must rotate at now, and why. DecideSecret asks it only in
// the steady state (the Secret carries the one current secret). An empty trigger or annotation value
// asks for nothing: removing it from Git does not rotate.
func RotationDue(obj *m2mv1alpha1.M2MClient, now time.Time) (RotationReason, string) {
	reason, why := RotationNotDue, ""
	st := &obj.Status
	trigger := obj.Spec.Rotation.Trigger
	annotation := obj.Annotations[m2mv1alpha1.RotateAnnotation]
	switch {
	case trigger != "" && trigger != st.LastRotationTrigger:
		reason, why = RotationTrigger, fmt.Sprintf("spec.rotation.trigger changed to %q", trigger)
	case annotation != "" && annotation != st.LastRotateAnnotation:
		reason, why = RotationAnnotation, fmt.Sprintf("the %s annotation changed to %q", m2mv1alpha1.RotateAnnotation, annotation)
	default:
		if next := nextRotation(obj); !next.IsZero() && !now.Before(next) {
			reason, why = RotationScheduled, fmt.Sprintf("the rotation period of %s has passed since %s", obj.Spec.Rotation.Period.Duration, st.LastRotationTime.UTC().Format(time.RFC3339))
		}
	}
	if reason != RotationNotDue && len(st.AcceptedSecrets) >= maxAcceptedSecrets {
		return RotationDeferred, fmt.Sprintf("a rotation is due (%s) but status already accepts %d secrets; it waits until the oldest expire", why, len(st.AcceptedSecrets))
	}
	return reason, why
}

// RevocationDue says whether obj asks for a revocation not acted on yet, and why: a new non-empty
// spec.rotation.revokeTrigger or m2m.dev/revoke-previous annotation. It is apart from RotationDue
// because DecideSecret asks it first, outside the steady state too, and because a revocation is
// never deferred for a full status: it leaves one entry.
func RevocationDue(obj *m2mv1alpha1.M2MClient) (bool, string) {
	st := &obj.Status
	trigger := obj.Spec.Rotation.RevokeTrigger
	annotation := obj.Annotations[m2mv1alpha1.RevokePreviousAnnotation]
	switch {
	case trigger != "" && trigger != st.LastRevokeTrigger:
		return true, fmt.Sprintf("spec.rotation.revokeTrigger changed to %q", trigger)
	case annotation != "" && annotation != st.LastRevokeAnnotation:
		return true, fmt.Sprintf("the %s annotation changed to %q", m2mv1alpha1.RevokePreviousAnnotation, annotation)
	}
	return false, ""
}

// nextRotation is when the scheduled rotation is due, or zero when rotation.period is unset.
func nextRotation(obj *m2mv1alpha1.M2MClient) time.Time {
	p := obj.Spec.Rotation.Period
	if p == nil || p.Duration <= 0 || obj.Status.LastRotationTime == nil {
		return time.Time{}
	}
	return obj.Status.LastRotationTime.Add(p.Duration)
}

// gracePeriod is how long a replaced secret stays accepted.
func gracePeriod(obj *m2mv1alpha1.M2MClient) time.Duration {
	if g := obj.Spec.Rotation.GracePeriod; g != nil {
		return g.Duration
	}
	return time.Hour
}
