package controllers

import (
	"fmt"
	"slices"
	"strings"
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
	// RotationSource: the source Secret of spec.authentication.source holds a new credential,
	// which a secret store wrote.
	RotationSource RotationReason = "Source"
)

// maxAcceptedSecrets is the size of status.acceptedSecrets that a rotation will not grow past.
const maxAcceptedSecrets = 100

// RotationDue says whether obj's secret must rotate at now, and why. DecideSecret asks it only in
// the steady state (the Secret carries the one current secret). An empty trigger or annotation value
// asks for nothing: removing it from Git does not rotate. Nor does an annotation value over
// MaxTriggerLength (annotationValue); when nothing is due, why says that it is ignored.
func RotationDue(obj *m2mv1alpha1.M2MClient, now time.Time) (RotationReason, string) {
	reason, why := RotationNotDue, ""
	st := &obj.Status
	trigger := obj.Spec.Rotation.Trigger
	annotation, ignored := annotationValue(obj, m2mv1alpha1.RotateAnnotation)
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
	if reason == RotationNotDue {
		return reason, ignored
	}
	return reason, why
}

// RevocationDue says whether obj asks for a revocation not acted on yet, and why: a new non-empty
// spec.rotation.revokeTrigger or m2m.dev/revoke-previous annotation. It is apart from RotationDue
// because DecideSecret asks it first, outside the steady state too, and because a revocation is
// never deferred for a full status: it leaves one entry. An annotation value over MaxTriggerLength
// asks for nothing; when nothing is due, why says that it is ignored.
func RevocationDue(obj *m2mv1alpha1.M2MClient) (bool, string) {
	st := &obj.Status
	trigger := obj.Spec.Rotation.RevokeTrigger
	annotation, ignored := annotationValue(obj, m2mv1alpha1.RevokePreviousAnnotation)
	switch {
	case trigger != "" && trigger != st.LastRevokeTrigger:
		return true, fmt.Sprintf("spec.rotation.revokeTrigger changed to %q", trigger)
	case annotation != "" && annotation != st.LastRevokeAnnotation:
		return true, fmt.Sprintf("the %s annotation changed to %q", m2mv1alpha1.RevokePreviousAnnotation, annotation)
	}
	return false, ignored
}

// triggerAnnotations are the annotations of an M2MClient that are acted on once per value.
var triggerAnnotations = []string{m2mv1alpha1.RotateAnnotation, m2mv1alpha1.RevokePreviousAnnotation}

// annotationValue is the value of obj's annotation key that the manager acts on and records in
// status, and, when it ignores the value obj carries, why. A value over MaxTriggerLength counts as
// no value: it is never new, so it rotates nothing, and it never reaches status, so that a tenant
// cannot make status (and every cache of it) hold it. The manager's cache does not hold it
// either: trimClient keeps only that it was there (longAnnotationsMark).
func annotationValue(obj *m2mv1alpha1.M2MClient, key string) (value, ignored string) {
	v := obj.Annotations[key]
	if m2mv1alpha1.TriggerTooLong(v) || v == "" && slices.Contains(strings.Fields(obj.Annotations[longAnnotationsMark]), key) {
		return "", fmt.Sprintf("the %s annotation is over %d characters and is ignored: it rotates nothing and is not recorded in status; set a shorter value (a date or a commit hash) to rotate", key, m2mv1alpha1.MaxTriggerLength)
	}
	return v, ""
}

// IgnoredAnnotations names the annotations of obj whose values the manager ignores
// (annotationValue), in the order of triggerAnnotations.
func IgnoredAnnotations(obj *m2mv1alpha1.M2MClient) []string {
	var names []string
	for _, key := range triggerAnnotations {
		if _, ignored := annotationValue(obj, key); ignored != "" {
			names = append(names, key)
		}
	}
	return names
}

// dropLongRecords removes from st the values acted on that are over MaxTriggerLength: a manager
// before the bound copied such annotation values into status, and a status writer may have
// written them where the status policy is not installed and the API server does not bound them
// yet (objects stored before the schema's maxLength keep theirs). No decision changes: such a
// value equals no value that is acted on.
func dropLongRecords(st *m2mv1alpha1.M2MClientStatus) {
	for _, v := range []*string{&st.LastRotationTrigger, &st.LastRotateAnnotation, &st.LastRevokeTrigger, &st.LastRevokeAnnotation} {
		if m2mv1alpha1.TriggerTooLong(*v) {
			*v = ""
		}
	}
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
