package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// holderAsks is obj with spec.rotation.holder at id and state.
func holderAsks(obj *m2mv1alpha1.M2MClient, id string, state m2mv1alpha1.HolderRotationState) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: id, State: state}
	return obj
}

// holderWas is obj with status.holderRotation at id and state; a started one's next is next.
func holderWas(obj *m2mv1alpha1.M2MClient, id string, state m2mv1alpha1.HolderRotationState) *m2mv1alpha1.M2MClient {
	obj.Status.HolderRotation = &m2mv1alpha1.HolderRotationStatus{ID: id, State: state}
	if state == m2mv1alpha1.HolderRotationStarted {
		obj.Status.HolderRotation.NextHash = entry(next, nil).Hash
	}
	return obj
}

// started is a client whose rotation r1 is started: current and next both accepted, spec asking
// for state.
func started(state m2mv1alpha1.HolderRotationState) *m2mv1alpha1.M2MClient {
	return holderWas(holderAsks(clientWith(entry(current, nil), entry(next, nil)), "r1", state), "r1", m2mv1alpha1.HolderRotationStarted)
}

// withNext is secret carrying value under its next_ key.
func withNext(secret *corev1.Secret, value string) *corev1.Secret {
	secret.Data[m2mv1alpha1.NextSecretKeyPrefix+m2mv1alpha1.SecretKeyClientSecret] = []byte(value)
	return secret
}

// A rotation that the holder completes is started, completed and cancelled once per id; two
// accepted credentials without expiry are its normal state, not an interrupted rotation; and a
// crash after any of its writes leads to a decision that finishes what was asked.
func TestDecideSecretForARotationTheHolderCompletes(t *testing.T) {
	hour := time.Hour
	completed := holderWas(holderAsks(clientWith(entry(next, nil)), "r1", m2mv1alpha1.HolderRotationCompleted), "r1", m2mv1alpha1.HolderRotationCompleted)
	cancelled := holderWas(holderAsks(clientWith(entry(current, nil)), "r1", m2mv1alpha1.HolderRotationCancelled), "r1", m2mv1alpha1.HolderRotationCancelled)
	replayedStart := holderWas(holderAsks(clientWith(entry(next, nil)), "r1", m2mv1alpha1.HolderRotationStarted), "r1", m2mv1alpha1.HolderRotationCompleted)
	full := holderAsks(clientWith(entry(current, nil)), "r1", m2mv1alpha1.HolderRotationStarted)
	for i := 1; i < maxAcceptedSecrets; i++ {
		full.Status.AcceptedSecrets = append([]m2mv1alpha1.AcceptedSecret{entry(strings.Repeat("x", i), &hour)}, full.Status.AcceptedSecrets...)
	}
	fullStarted := started(m2mv1alpha1.HolderRotationStarted)
	for i := 2; i < maxAcceptedSecrets; i++ {
		fullStarted.Status.AcceptedSecrets = append([]m2mv1alpha1.AcceptedSecret{entry(strings.Repeat("x", i), &hour)}, fullStarted.Status.AcceptedSecrets...)
	}
	nextExpiring := holderWas(holderAsks(clientWith(entry(current, nil), entry(next, &hour)), "r1", m2mv1alpha1.HolderRotationStarted), "r1", m2mv1alpha1.HolderRotationStarted)

	for sentence, tc := range map[string]struct {
		obj      *m2mv1alpha1.M2MClient
		secret   *corev1.Secret
		action   SecretAction
		rotation RotationReason
	}{
		"a new id with state Started starts a rotation": {
			holderAsks(clientWith(entry(current, nil)), "r1", m2mv1alpha1.HolderRotationStarted), ownedSecret(current), ActionHolderStart, RotationNotDue},
		"a new id after a completed rotation starts another": {
			holderAsks(completed.DeepCopy(), "r2", m2mv1alpha1.HolderRotationStarted), ownedSecret(next), ActionHolderStart, RotationNotDue},
		"a start waits for an interrupted scheduled rotation to settle": {
			holderAsks(clientWith(entry(current, nil), entry(old, nil)), "r1", m2mv1alpha1.HolderRotationStarted), ownedSecret(current), ActionResumeRotation, RotationResumed},
		"a start waits while status is full": {
			full, ownedSecret(current), ActionNone, RotationDeferred},
		"a started rotation whose next_ key was rewritten waits while status is full, instead of growing it past its limit": {
			fullStarted, withNext(ownedSecret(current), "written-by-someone-else"), ActionNone, RotationDeferred},
		"a started rotation with both credentials accepted needs nothing": {
			started(m2mv1alpha1.HolderRotationStarted), withNext(ownedSecret(current), next), ActionNone, RotationNotDue},
		"a started rotation keeps a scheduled period waiting": {
			withPeriod(started(m2mv1alpha1.HolderRotationStarted), time.Hour), withNext(ownedSecret(current), next), ActionNone, RotationNotDue},
		"a started rotation keeps a trigger change waiting": {
			withTrigger(started(m2mv1alpha1.HolderRotationStarted), "v2"), withNext(ownedSecret(current), next), ActionNone, RotationNotDue},
		"a started rotation keeps the rotate annotation waiting": {
			withAnnotation(started(m2mv1alpha1.HolderRotationStarted), "1764000000"), withNext(ownedSecret(current), next), ActionNone, RotationNotDue},
		"a revocation during a started rotation goes first and revokes the next credential too": {
			revokeAsked(started(m2mv1alpha1.HolderRotationStarted)), withNext(ownedSecret(current), next), ActionRotate, RotationRevoke},
		"Completed for the started id completes it": {
			started(m2mv1alpha1.HolderRotationCompleted), withNext(ownedSecret(current), next), ActionHolderComplete, RotationNotDue},
		"Cancelled for the started id cancels it": {
			started(m2mv1alpha1.HolderRotationCancelled), withNext(ownedSecret(current), next), ActionHolderCancel, RotationNotDue},
		"Completed or Cancelled for another id than the started one does nothing": {
			holderAsks(started(m2mv1alpha1.HolderRotationStarted), "r0", m2mv1alpha1.HolderRotationCompleted), withNext(ownedSecret(current), next), ActionNone, RotationNotDue},
		"a crash after a start persisted its hash issues a fresh next credential": {
			started(m2mv1alpha1.HolderRotationStarted), ownedSecret(current), ActionHolderStart, RotationNotDue},
		"a crash after a start persisted its hash, with Completed already asked, issues a fresh next credential rather than complete to one never written": {
			started(m2mv1alpha1.HolderRotationCompleted), ownedSecret(current), ActionHolderStart, RotationNotDue},
		"a crash after a start persisted its hash, with Cancelled asked, cancels": {
			started(m2mv1alpha1.HolderRotationCancelled), ownedSecret(current), ActionHolderCancel, RotationNotDue},
		"a crash after completing wrote the Secret finishes the completion, whatever spec says now": {
			started(m2mv1alpha1.HolderRotationCancelled), ownedSecret(next), ActionHolderComplete, RotationNotDue},
		"a next credential that something else gave an expiry ends the rotation as cancelled": {
			nextExpiring, withNext(ownedSecret(current), next), ActionHolderCancel, RotationNotDue},
		"a completed rotation replayed from Git does nothing": {
			completed, ownedSecret(next), ActionNone, RotationNotDue},
		"a cancelled rotation replayed from Git does nothing": {
			cancelled, ownedSecret(current), ActionNone, RotationNotDue},
		"a Started state replayed for a completed id starts nothing": {
			replayedStart, ownedSecret(next), ActionNone, RotationNotDue},
		"a new id with state Completed starts nothing": {
			holderAsks(clientWith(entry(current, nil)), "r9", m2mv1alpha1.HolderRotationCompleted), ownedSecret(current), ActionNone, RotationNotDue},
		"a Secret deleted during a started rotation is written again": {
			started(m2mv1alpha1.HolderRotationStarted), nil, ActionGenerate, RotationNotDue},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.action || got.Rotation != tc.rotation {
				t.Fatalf("got %s/%q (%s), want %s/%q", got.Action, got.Rotation, got.Why, tc.action, tc.rotation)
			}
			for _, s := range []string{current, next, old} {
				if strings.Contains(got.Why, s) {
					t.Fatalf("the explanation %q contains a secret", got.Why)
				}
			}
		})
	}
}

// Turning client secrets off while a rotation the holder completes is started retires its next
// credential with the rest, and ends the rotation as cancelled: left Started, it would refuse every
// later start and keep --complete waiting (found by the review).
func TestTurningSecretsOffCancelsAStartedHolderRotation(t *testing.T) {
	obj := started(m2mv1alpha1.HolderRotationStarted)
	obj.UID = "uid-1"
	obj.Spec.Authentication.ClientSecret = ptr.To(false)
	obj.Spec.Authentication.ServiceAccounts = []string{"runner"}
	r, c := clientReconciler(t, enforcedKeys(t), interceptor.Funcs{}, obj)
	key := client.ObjectKeyFromObject(obj)
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	got := &m2mv1alpha1.M2MClient{}
	if err := c.Get(context.Background(), key, got); err != nil {
		t.Fatal(err)
	}
	if h := got.Status.HolderRotation; h == nil || h.State != m2mv1alpha1.HolderRotationCancelled {
		t.Fatalf("the holder rotation is %+v, want Cancelled", h)
	}
}
