package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// The decisions for a credential that a secret store writes into a source Secret: the manager
// follows the source and nothing else.
func TestDecideSuppliedSecret(t *testing.T) {
	hour := time.Hour
	holds := func(value string) credentials.Supply {
		return credentials.Supply{Secret: "team/from-vault", Key: m2mv1alpha1.SecretKeyClientSecret, Value: value}
	}
	missing := credentials.Supply{Secret: "team/from-vault", Key: m2mv1alpha1.SecretKeyClientSecret, Missing: "Secret team/from-vault does not exist"}
	refused := credentials.Supply{Secret: "team/from-vault", Key: m2mv1alpha1.SecretKeyClientSecret, Refused: "it is a Secret that the manager writes"}
	foreign := ownedSecret(current)
	foreign.OwnerReferences = nil
	revoking := clientWith(entry(old, nil), entry(current, nil))
	revoking.Status.RevocationPending = true
	revokeAsked := clientWith(entry(current, nil))
	revokeAsked.Annotations = map[string]string{m2mv1alpha1.RevokePreviousAnnotation: "leak"}

	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		supply credentials.Supply
		want   SecretAction
		reason RotationReason
		revoke bool
	}{
		"a new client whose source does not exist yet waits, and issues nothing": {
			obj: clientWith(), secret: nil, supply: missing, want: ActionAwaitSource,
		},
		"a client whose source was deleted keeps the credential it accepted, and waits": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(current), supply: missing, want: ActionAwaitSource,
		},
		"a source the manager will not read is refused": {
			obj: clientWith(), secret: nil, supply: refused, want: ActionRefuseSource,
		},
		"a weak value in the source is refused, and nothing is issued instead": {
			obj: clientWith(), secret: nil, supply: holds("hunter2"), want: ActionRefuseWeak,
		},
		"a weak new value in the source is refused, and the accepted one stays": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(current), supply: holds("password-password-password-password"), want: ActionRefuseWeak,
		},
		"the first value in the source is accepted and written": {
			obj: clientWith(), secret: nil, supply: holds(current), want: ActionGenerate,
		},
		"a Secret that carries the source's accepted value needs nothing": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(current), supply: holds(current), want: ActionNone,
		},
		"a new value in the source is a rotation": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(current), supply: holds(next), want: ActionRotate, reason: RotationSource,
		},
		"a source set back to a value in its grace period is a rotation back to it": {
			obj: clientWith(entry(old, &hour), entry(current, nil)), secret: ownedSecret(current), supply: holds(old), want: ActionRotate, reason: RotationSource,
		},
		"a crash after accepting the source's value and before writing it writes it": {
			obj: clientWith(entry(current, nil), entry(next, nil)), secret: ownedSecret(current), supply: holds(next), want: ActionResumeRotation, reason: RotationResumed,
		},
		"a crash after writing the source's value completes the rotation": {
			obj: clientWith(entry(current, nil), entry(next, nil)), secret: ownedSecret(next), supply: holds(next), want: ActionCompleteRotation,
		},
		"a value someone wrote into the Secret is not adopted: the source's is written back": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(next), supply: holds(current), want: ActionResumeRotation, reason: RotationResumed,
		},
		"a deleted Secret is written again with the source's value, not a new one": {
			obj: clientWith(entry(current, nil)), secret: nil, supply: holds(current), want: ActionResumeRotation, reason: RotationResumed,
		},
		"a lost status is rebuilt from the Secret first, so that the store's newer value is a rotation with the grace period": {
			obj: clientWith(), secret: ownedSecret(next), supply: holds(current), want: ActionRecoverStatus,
		},
		"a lost status over a Secret that carries the source's value takes it as the first credential": {
			obj: clientWith(), secret: ownedSecret(current), supply: holds(current), want: ActionGenerate,
		},
		"a lost status over a Secret with a weak value takes the source's": {
			obj: clientWith(), secret: ownedSecret("hunter2"), supply: holds(current), want: ActionGenerate,
		},
		"a due rotation of the manager's asks for nothing": {
			obj: withPeriod(withTrigger(withAnnotation(clientWith(entry(current, nil)), "now"), "v2"), time.Hour), secret: ownedSecret(current), supply: holds(current), want: ActionNone,
		},
		"a revocation asked for asks for nothing either": {
			obj: revokeAsked, secret: ownedSecret(current), supply: holds(current), want: ActionNone,
		},
		"a revocation started before the client named a source ends with the source's value": {
			obj: revoking, secret: ownedSecret(current), supply: holds(next), want: ActionRotate, reason: RotationSource, revoke: true,
		},
		"a Secret that is not the client's is never touched, whatever the source holds": {
			obj: clientWith(), secret: foreign, supply: holds(current), want: ActionConflict,
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSuppliedSecret(tc.obj, tc.secret, tc.supply, now)
			if got.Action != tc.want || got.Rotation != tc.reason || got.Revoke != tc.revoke {
				t.Fatalf("action %s/%q revoke=%v (%s), want %s/%q revoke=%v", got.Action, got.Rotation, got.Revoke, got.Why, tc.want, tc.reason, tc.revoke)
			}
			for _, v := range []string{current, next, old, "hunter2"} {
				if strings.Contains(got.Why, v) {
					t.Fatalf("the decision quotes a secret: %s", got.Why)
				}
			}
		})
	}
}

// A key pair from a source: the source's private key must be one of the algorithm the spec asks
// for, and a new one is a rotation like a new secret.
func TestDecideSuppliedKeyPair(t *testing.T) {
	kind := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}
	curKey, _ := kind.Issue()
	curEntry, _ := kind.Entry(curKey, now.Add(-time.Hour))
	nextKey, _ := kind.Issue()
	edKey, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}.Issue()
	obj := clientWith(curEntry)
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{Algorithm: m2mv1alpha1.KeyAlgorithmES256}
	secret := ownedSecret("")
	secret.Data = map[string][]byte{m2mv1alpha1.SecretKeyPrivateKey: []byte(curKey)}
	holds := func(v string) credentials.Supply {
		return credentials.Supply{Secret: "team/from-vault", Key: m2mv1alpha1.SecretKeyPrivateKey, Value: v}
	}
	for sentence, tc := range map[string]struct {
		supply credentials.Supply
		want   SecretAction
	}{
		"the accepted key in the Secret and the source needs nothing": {holds(curKey), ActionNone},
		"a new key in the source is a rotation":                       {holds(nextKey), ActionRotate},
		"a key of another algorithm in the source is refused":         {holds(edKey), ActionRefuseWeak},
		"a client secret in the source of a key pair is refused":      {holds(next), ActionRefuseWeak},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSuppliedSecret(obj, secret, tc.supply, now)
			if got.Action != tc.want {
				t.Fatalf("action %s (%s), want %s", got.Action, got.Why, tc.want)
			}
			if strings.Contains(got.Why, "PRIVATE KEY") {
				t.Fatal("the decision quotes the key")
			}
		})
	}
}
