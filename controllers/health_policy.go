package controllers

import (
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// Health is what the kstatus conditions say of a client; a nil condition is absent (kstatus
// conditions are abnormal-true: present only while True).
type Health struct {
	Reconciling *metav1.Condition
	Stalled     *metav1.Condition
}

// DecideHealth derives the kstatus conditions from the Ready condition that a reconcile ends with
// (nil when no reconcile has set it) and the error it ends with. Ready is the one verdict the
// steps reach, so the two can never disagree: Ready True is Current, Ready False is Stalled
// (every reason of a False Ready but SourceSecretMissing waits for a human), and no verdict yet,
// or a source the secret store has not written yet, is Reconciling.
func DecideHealth(ready *metav1.Condition, reconcileErr error) Health {
	switch {
	case ready != nil && ready.Status == metav1.ConditionTrue:
		return Health{}
	case ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason == m2mv1alpha1.ReasonSourceSecretMissing:
		// The secret store's next sync ends it, not a human.
		return Health{Reconciling: &metav1.Condition{
			Type: m2mv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: ready.Reason, Message: ready.Message,
		}}
	case ready != nil && ready.Status == metav1.ConditionFalse:
		return Health{Stalled: &metav1.Condition{
			Type: m2mv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: ready.Reason, Message: ready.Message,
		}}
	case errors.Is(reconcileErr, errNoCABundle):
		return Health{Reconciling: &metav1.Condition{
			Type: m2mv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: m2mv1alpha1.ReasonAwaitingCABundle,
			Message: "waiting for the CA bundle that credentials Secrets carry for the https issuer: " + reconcileErr.Error(),
		}}
	default:
		return Health{Reconciling: &metav1.Condition{
			Type: m2mv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: m2mv1alpha1.ReasonIssuingCredentials,
			Message: "the manager has not yet issued the client's credentials; it retries",
		}}
	}
}
