package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// revokeAsked asks obj for a revocation not acted on yet: spec.rotation.revokeTrigger leak-2,
// after leak-1.
func revokeAsked(obj *m2mv1alpha1.M2MClient) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.RevokeTrigger, obj.Status.LastRevokeTrigger = "leak-2", "leak-1"
	return obj
}

// revoking is obj in the middle of the revocation for leak-2: step 1 (the new hash, with the value
// acted on) is persisted, the end is not.
func revoking(obj *m2mv1alpha1.M2MClient) *m2mv1alpha1.M2MClient {
	obj.Spec.Rotation.RevokeTrigger, obj.Status.LastRevokeTrigger = "leak-2", "leak-2"
	obj.Status.RevocationPending = true
	return obj
}

// A revocation is a rotation whose end drops every earlier credential at once. Its writes are
// those of a rotation (the new hash with the values acted on and revocationPending, the Secret,
// the end), and a crash after any of them leads to a decision that finishes it as a revocation.
func TestDecideSecretForARevocation(t *testing.T) {
	hour := time.Hour
	full := revokeAsked(clientWith(entry(current, nil)))
	for i := 1; i < maxAcceptedSecrets; i++ {
		full.Status.AcceptedSecrets = append([]m2mv1alpha1.AcceptedSecret{entry(strings.Repeat("x", i), &hour)}, full.Status.AcceptedSecrets...)
	}
	annotated := clientWith(entry(current, nil))
	annotated.Annotations = map[string]string{m2mv1alpha1.RevokePreviousAnnotation: "1764000000"}
	both := withTrigger(revokeAsked(clientWith(entry(current, nil))), "v2")
	created := clientWith()
	created.Spec.Rotation.RevokeTrigger = "leak-1"
	lost := clientWith()
	lost.Spec.Rotation.RevokeTrigger = "leak-1"
	foreign := ownedSecret(current)
	foreign.OwnerReferences = nil
	done := clientWith(entry(next, nil))
	done.Spec.Rotation.RevokeTrigger, done.Status.LastRevokeTrigger = "leak-2", "leak-2"

	for sentence, tc := range map[string]struct {
		obj      *m2mv1alpha1.M2MClient
		secret   *corev1.Secret
		action   SecretAction
		rotation RotationReason
		revoke   bool
	}{
		"a new revokeTrigger value in the steady state rotates and revokes": {
			revokeAsked(clientWith(entry(current, nil))), ownedSecret(current), ActionRotate, RotationRevoke, true},
		"a new revoke-previous annotation value rotates and revokes": {
			annotated, ownedSecret(current), ActionRotate, RotationRevoke, true},
		"a revocation with earlier secrets in their grace period revokes them too": {
			revokeAsked(clientWith(entry(old, &hour), entry(current, nil))), ownedSecret(current), ActionRotate, RotationRevoke, true},
		"a revocation is not deferred by a full status": {
			full, ownedSecret(current), ActionRotate, RotationRevoke, true},
		"a revocation and a rotation trigger at once rotate once, as a revocation": {
			both, ownedSecret(current), ActionRotate, RotationRevoke, true},
		"a crash after a revocation persisted its new hash resumes it with a fresh secret that revokes": {
			revoking(clientWith(entry(current, nil), entry(next, nil))), ownedSecret(current), ActionResumeRotation, RotationResumed, true},
		"a crash after a revocation wrote the Secret ends it by dropping every earlier secret": {
			revoking(clientWith(entry(old, &hour), entry(current, nil), entry(next, nil))), ownedSecret(next), ActionCompleteRotation, RotationNotDue, true},
		"a crash after a revocation wrote the Secret, with only expiring others left, ends it": {
			revoking(clientWith(entry(old, &hour), entry(next, nil))), ownedSecret(next), ActionCompleteRotation, RotationNotDue, true},
		"a finished revocation needs nothing": {
			done, ownedSecret(next), ActionNone, RotationNotDue, false},
		"a revocation asked after a rotation wrote its Secret and crashed issues a secret newer than the request": {
			revokeAsked(clientWith(entry(current, nil), entry(next, nil))), ownedSecret(next), ActionRotate, RotationRevoke, true},
		"a revocation asked during an interrupted rotation issues a fresh secret that revokes": {
			revokeAsked(clientWith(entry(current, nil), entry(next, nil))), ownedSecret(current), ActionRotate, RotationRevoke, true},
		"a strong secret written into the Secret during a revocation is replaced, not adopted": {
			revoking(clientWith(entry(current, nil), entry(next, nil))), ownedSecret(old), ActionResumeRotation, RotationResumed, true},
		"a Secret set back to a secret in its grace period during a revocation is replaced": {
			revoking(clientWith(entry(old, &hour), entry(current, nil), entry(next, nil))), ownedSecret(old), ActionResumeRotation, RotationResumed, true},
		"a short secret written into the Secret when a revocation is asked is replaced, not refused": {
			revokeAsked(clientWith(entry(current, nil))), ownedSecret("hunter2"), ActionRotate, RotationRevoke, true},
		"a Secret deleted during a revocation is written again with a secret that revokes": {
			revoking(clientWith(entry(current, nil), entry(next, nil))), nil, ActionGenerate, RotationRevoke, true},
		"a revocation never touches a Secret that is not the client's": {
			revokeAsked(clientWith(entry(current, nil))), foreign, ActionConflict, RotationNotDue, false},
		"a revokeTrigger present when the client is created revokes nothing": {
			created, nil, ActionGenerate, RotationNotDue, false},
		"a lost status is rebuilt from the Secret, not revoked, whatever revokeTrigger says": {
			lost, ownedSecret(current), ActionRecoverStatus, RotationNotDue, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.action || got.Rotation != tc.rotation || got.Revoke != tc.revoke {
				t.Fatalf("got %s/%q revoke=%v (%s), want %s/%q revoke=%v", got.Action, got.Rotation, got.Revoke, got.Why, tc.action, tc.rotation, tc.revoke)
			}
			for _, s := range []string{current, next, old, "hunter2"} {
				if strings.Contains(got.Why, s) {
					t.Fatalf("the explanation %q contains a secret", got.Why)
				}
			}
		})
	}
}

// A key pair is revoked on the same path: the decision compares fingerprints, whatever the kind.
func TestDecideSecretRevokesAKeyPairAsASecret(t *testing.T) {
	kind := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}
	issue := func() (string, m2mv1alpha1.AcceptedSecret) {
		pemKey, err := kind.Issue()
		if err != nil {
			t.Fatal(err)
		}
		e, err := kind.Entry(pemKey, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return pemKey, e
	}
	curKey, curEntry := issue()
	nextKey, nextEntry := issue()
	keyClient := func(entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
		obj := clientWith(entries...)
		obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
		return obj
	}
	withKey := func(pemKey string) *corev1.Secret {
		s := ownedSecret("")
		s.Data = map[string][]byte{m2mv1alpha1.SecretKeyPrivateKey: []byte(pemKey), m2mv1alpha1.SecretKeyClientID: []byte("m2m-id")}
		return s
	}
	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		action SecretAction
	}{
		"a new revokeTrigger value rotates the key pair and revokes":                  {revokeAsked(keyClient(curEntry)), withKey(curKey), ActionRotate},
		"a crash after persisting the new public key resumes with a fresh key pair":   {revoking(keyClient(curEntry, nextEntry)), withKey(curKey), ActionResumeRotation},
		"a crash after writing the new private key ends it by dropping the older key": {revoking(keyClient(curEntry, nextEntry)), withKey(nextKey), ActionCompleteRotation},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.action || !got.Revoke {
				t.Fatalf("got %s revoke=%v (%s), want %s revoke=true", got.Action, got.Revoke, got.Why, tc.action)
			}
			if strings.Contains(got.Why, "PRIVATE KEY") {
				t.Fatal("the decision quotes the key")
			}
		})
	}
}
