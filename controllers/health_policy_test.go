package controllers

import (
	"errors"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestDecideHealth(t *testing.T) {
	ready := func(status metav1.ConditionStatus, reason string) *metav1.Condition {
		return &metav1.Condition{Type: m2mv1alpha1.ConditionReady, Status: status, Reason: reason, Message: "the message of " + reason}
	}
	noBundle := fmt.Errorf("%w: Secret m2m-system/m2m-ca has no ca.crt yet", errNoCABundle)
	for sentence, tc := range map[string]struct {
		ready *metav1.Condition
		err   error
		// reconciling and stalled are the reasons of the conditions; empty: absent.
		reconciling, stalled string
	}{
		"a Ready client carries neither condition":                                                 {ready(metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady), nil, "", ""},
		"a Ready client whose last reconcile failed is still neither":                              {ready(metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady), errors.New("conflict"), "", ""},
		"a foreign Secret stalls the client until a human removes it":                              {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict), nil, "", m2mv1alpha1.ReasonSecretConflict},
		"a weak secret stalls the client":                                                          {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonWeakSecret), nil, "", m2mv1alpha1.ReasonWeakSecret},
		"a Secret the API server refuses stalls the client, although it retries":                   {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonSecretWriteFailed), errors.New("immutable"), "", m2mv1alpha1.ReasonSecretWriteFailed},
		"a client ID bound elsewhere stalls the client":                                            {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonDuplicateClientID), nil, "", m2mv1alpha1.ReasonDuplicateClientID},
		"claims too large stall the client":                                                        {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonClaimsTooLarge), nil, "", m2mv1alpha1.ReasonClaimsTooLarge},
		"a source the secret store has not written yet leaves the client reconciling, not stalled": {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing), nil, m2mv1alpha1.ReasonSourceSecretMissing, ""},
		"a source the manager refuses stalls the client":                                           {ready(metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretRefused), nil, "", m2mv1alpha1.ReasonSourceSecretRefused},
		"a client no reconcile has given a verdict is reconciling":                                 {nil, nil, m2mv1alpha1.ReasonIssuingCredentials, ""},
		"a first reconcile that failed leaves the client reconciling":                              {nil, errors.New("etcd timeout"), m2mv1alpha1.ReasonIssuingCredentials, ""},
		"a first reconcile waiting for the CA bundle says so":                                      {nil, noBundle, m2mv1alpha1.ReasonAwaitingCABundle, ""},
		"a Ready of unknown status (which the manager never sets) is reconciling":                  {ready(metav1.ConditionUnknown, "Unknown"), nil, m2mv1alpha1.ReasonIssuingCredentials, ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			h := DecideHealth(tc.ready, tc.err)
			if got := reasonOf(h.Reconciling, m2mv1alpha1.ConditionReconciling); got != tc.reconciling {
				t.Errorf("Reconciling: %q, want %q", got, tc.reconciling)
			}
			if got := reasonOf(h.Stalled, m2mv1alpha1.ConditionStalled); got != tc.stalled {
				t.Errorf("Stalled: %q, want %q", got, tc.stalled)
			}
			if h.Stalled != nil && h.Stalled.Message != tc.ready.Message {
				t.Errorf("Stalled says %q, not Ready's %q", h.Stalled.Message, tc.ready.Message)
			}
		})
	}
}

// reasonOf is c's reason after checking that c is the True condition of its type; "" for nil.
func reasonOf(c *metav1.Condition, typ string) string {
	if c == nil {
		return ""
	}
	if c.Type != typ || c.Status != metav1.ConditionTrue {
		return fmt.Sprintf("a %s condition of status %s", c.Type, c.Status)
	}
	return c.Reason
}

func TestSetHealthRemovesWhatNoLongerHolds(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict, "taken")
	setHealth(obj, DecideHealth(nil, nil))
	setHealth(obj, DecideHealth(&obj.Status.Conditions[0], nil))
	if len(obj.Status.Conditions) != 2 || obj.Status.Conditions[1].Type != m2mv1alpha1.ConditionStalled || obj.Status.Conditions[1].ObservedGeneration != 3 {
		t.Fatalf("after Reconciling then Stalled: %+v, want Ready and a Stalled of generation 3", obj.Status.Conditions)
	}
	setReady(obj, metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady, "ok")
	setHealth(obj, DecideHealth(&obj.Status.Conditions[0], nil))
	if len(obj.Status.Conditions) != 1 {
		t.Fatalf("a Ready client keeps %+v, want Ready alone", obj.Status.Conditions)
	}
}
