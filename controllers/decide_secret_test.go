package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

func TestDecideSecret(t *testing.T) {
	hour := time.Hour
	ago := -time.Minute
	foreign := ownedSecret(current)
	foreign.OwnerReferences = nil
	otherOwner := ownedSecret(current)
	otherOwner.OwnerReferences[0].Name = "someone-else"
	restored := ownedSecret(current)
	restored.OwnerReferences[0].UID = "uid-before-backup"

	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		want   SecretAction
	}{
		"a new client with no Secret gets a generated secret": {
			obj: clientWith(), secret: nil, want: ActionGenerate,
		},
		"a deleted Secret is written again with a new secret": {
			obj: clientWith(entry(current, nil)), secret: nil, want: ActionGenerate,
		},
		"a Secret whose client_secret was removed gets a new secret": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(""), want: ActionGenerate,
		},
		"a Secret with no owner is never touched": {
			obj: clientWith(), secret: foreign, want: ActionConflict,
		},
		"a Secret owned by another client is never touched": {
			obj: clientWith(entry(current, nil)), secret: otherOwner, want: ActionConflict,
		},
		"a Secret that carries the one current secret needs nothing": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(current), want: ActionNone,
		},
		"a Secret owned by this client restored with a new UID is still its own": {
			obj: clientWith(entry(current, nil)), secret: restored, want: ActionNone,
		},
		"previous secrets in their grace period need nothing": {
			obj: clientWith(entry(old, &hour), entry(current, nil)), secret: ownedSecret(current), want: ActionNone,
		},
		"a crash after writing the new secret but before expiring the old one completes the rotation": {
			obj: clientWith(entry(current, nil), entry(next, nil)), secret: ownedSecret(next), want: ActionCompleteRotation,
		},
		"a crash after persisting a new hash but before writing it resumes the rotation": {
			obj: clientWith(entry(current, nil), entry(next, nil)), secret: ownedSecret(current), want: ActionResumeRotation,
		},
		"a crash in a rotation that follows an expiring older secret resumes it too": {
			obj: clientWith(entry(old, &hour), entry(current, nil), entry(next, nil)), secret: ownedSecret(current), want: ActionResumeRotation,
		},
		"a strong secret written by a person is adopted": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret(next), want: ActionAdopt,
		},
		"a Secret set back to a previous secret within its grace period re-accepts it": {
			obj: clientWith(entry(old, &hour), entry(current, nil)), secret: ownedSecret(old), want: ActionAdopt,
		},
		"a Secret set back to a secret whose grace period is over, not yet pruned, re-accepts it": {
			obj: clientWith(entry(old, &ago), entry(current, nil)), secret: ownedSecret(old), want: ActionAdopt,
		},
		"a short secret written by a person is refused": {
			obj: clientWith(entry(current, nil)), secret: ownedSecret("hunter2"), want: ActionRefuseWeak,
		},
		"a short secret is refused even when status was lost": {
			obj: clientWith(), secret: ownedSecret("hunter2"), want: ActionRefuseWeak,
		},
		"a lost status is rebuilt from the Secret": {
			obj: clientWith(), secret: ownedSecret(current), want: ActionRecoverStatus,
		},
		"a new trigger value in the steady state rotates": {
			obj: withTrigger(clientWith(entry(current, nil)), "v2"), secret: ownedSecret(current), want: ActionRotate,
		},
		"a new trigger value waits while a rotation is completed": {
			obj: withTrigger(clientWith(entry(current, nil), entry(next, nil)), "v2"), secret: ownedSecret(next), want: ActionCompleteRotation,
		},
		"a new trigger value waits while an interrupted rotation is resumed": {
			obj: withTrigger(clientWith(entry(current, nil), entry(next, nil)), "v2"), secret: ownedSecret(current), want: ActionResumeRotation,
		},
		"a new trigger value waits while a deleted Secret is written again": {
			obj: withTrigger(clientWith(entry(current, nil)), "v2"), secret: nil, want: ActionGenerate,
		},
		"a new trigger value never rotates a Secret that is not the client's": {
			obj: withTrigger(clientWith(entry(current, nil)), "v2"), secret: foreign, want: ActionConflict,
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.want {
				t.Fatalf("action %s (%s), want %s", got.Action, got.Why, tc.want)
			}
			if got.Why == "" {
				t.Fatal("a decision must say why")
			}
			for _, s := range []string{current, next, old, "hunter2"} {
				if strings.Contains(got.Why, s) {
					t.Fatalf("the explanation %q contains a secret", got.Why)
				}
			}
		})
	}
}

func TestDecideSecretCarriesTheRotationReason(t *testing.T) {
	rotated := metav1.NewTime(now.Add(-2 * time.Hour))
	scheduled := clientWith(entry(current, nil))
	scheduled.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour}
	scheduled.Status.LastRotationTime = &rotated
	full := scheduled.DeepCopy()
	for i := 1; i < maxAcceptedSecrets; i++ {
		hour := time.Hour
		full.Status.AcceptedSecrets = append([]m2mv1alpha1.AcceptedSecret{entry(strings.Repeat("x", i), &hour)}, full.Status.AcceptedSecrets...)
	}
	for sentence, tc := range map[string]struct {
		obj      *m2mv1alpha1.M2MClient
		secret   *corev1.Secret
		action   SecretAction
		rotation RotationReason
	}{
		"a passed period rotates on schedule":           {scheduled, ownedSecret(current), ActionRotate, RotationScheduled},
		"a new trigger rotates for the trigger":         {withTrigger(clientWith(entry(current, nil)), "v2"), ownedSecret(current), ActionRotate, RotationTrigger},
		"a due rotation with a full status waits":       {full, ownedSecret(current), ActionNone, RotationDeferred},
		"an interrupted rotation resumes":               {clientWith(entry(current, nil), entry(next, nil)), ownedSecret(current), ActionResumeRotation, RotationResumed},
		"the steady state with nothing due rotates not": {clientWith(entry(current, nil)), ownedSecret(current), ActionNone, RotationNotDue},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.action || got.Rotation != tc.rotation {
				t.Fatalf("got %s/%q (%s), want %s/%q", got.Action, got.Rotation, got.Why, tc.action, tc.rotation)
			}
		})
	}
}

func TestOnlyGenerateRotateAndResumeIssueANewSecret(t *testing.T) {
	for _, a := range []SecretAction{ActionNone, ActionGenerate, ActionRotate, ActionAdopt, ActionRecoverStatus, ActionCompleteRotation, ActionResumeRotation, ActionRefuseWeak, ActionConflict} {
		want := a == ActionGenerate || a == ActionRotate || a == ActionResumeRotation
		if a.Issues() != want {
			t.Errorf("%s.Issues() = %v", a, a.Issues())
		}
	}
}

func TestDecideSecretForAKeyPair(t *testing.T) {
	issue := func(alg m2mv1alpha1.KeyAlgorithm) (string, m2mv1alpha1.AcceptedSecret) {
		pemKey, err := credentials.KeyPair{Algorithm: alg}.Issue()
		if err != nil {
			t.Fatal(err)
		}
		e, err := credentials.KeyPair{Algorithm: alg}.Entry(pemKey, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return pemKey, e
	}
	keyClient := func(alg m2mv1alpha1.KeyAlgorithm, entries ...m2mv1alpha1.AcceptedSecret) *m2mv1alpha1.M2MClient {
		obj := clientWith(entries...)
		obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{Algorithm: alg}
		return obj
	}
	withKey := func(pemKey string) *corev1.Secret {
		s := ownedSecret("")
		s.Data = map[string][]byte{m2mv1alpha1.SecretKeyPrivateKey: []byte(pemKey), m2mv1alpha1.SecretKeyClientID: []byte("m2m-id")}
		return s
	}
	curKey, curEntry := issue(m2mv1alpha1.KeyAlgorithmES256)
	nextKey, nextEntry := issue(m2mv1alpha1.KeyAlgorithmES256)
	edKey, _ := issue(m2mv1alpha1.KeyAlgorithmEdDSA)
	hour := time.Hour
	expiring := curEntry
	expiring.ExpiresAt = ptr.To(metav1.NewTime(now.Add(hour)))

	for sentence, tc := range map[string]struct {
		obj    *m2mv1alpha1.M2MClient
		secret *corev1.Secret
		want   SecretAction
		reason RotationReason
	}{
		"a new key-pair client gets a generated key pair": {
			obj: keyClient(""), secret: nil, want: ActionGenerate,
		},
		"a client that switches from a secret to a key pair gets a key pair": {
			obj: keyClient("", entry(current, nil)), secret: ownedSecret(current), want: ActionGenerate,
		},
		"a client that switches from a key pair to a secret gets a secret": {
			obj: clientWith(curEntry), secret: withKey(curKey), want: ActionGenerate,
		},
		"a Secret that carries the current private key needs nothing": {
			obj: keyClient("", curEntry), secret: withKey(curKey), want: ActionNone,
		},
		"a crash after writing the new key but before expiring the old one completes the rotation": {
			obj: keyClient("", curEntry, nextEntry), secret: withKey(nextKey), want: ActionCompleteRotation,
		},
		"a crash after persisting a new public key but before writing the private key resumes the rotation": {
			obj: keyClient("", curEntry, nextEntry), secret: withKey(curKey), want: ActionResumeRotation, reason: RotationResumed,
		},
		"a new trigger value rotates the key pair": {
			obj: withTrigger(keyClient("", curEntry), "v2"), secret: withKey(curKey), want: ActionRotate, reason: RotationTrigger,
		},
		"a new m2m.dev/rotate annotation rotates the key pair": {
			obj: withAnnotation(keyClient("", curEntry), "now"), secret: withKey(curKey), want: ActionRotate, reason: RotationAnnotation,
		},
		"a key pair past its rotation period rotates": {
			obj: withPeriod(keyClient("", curEntry), time.Hour), secret: withKey(curKey), want: ActionRotate, reason: RotationScheduled,
		},
		"a changed algorithm rotates the key pair": {
			obj: keyClient(m2mv1alpha1.KeyAlgorithmEdDSA, curEntry), secret: withKey(curKey), want: ActionRotate, reason: RotationAlgorithm,
		},
		"a private key of the algorithm, written by a person, is adopted": {
			obj: keyClient("", curEntry), secret: withKey(nextKey), want: ActionAdopt,
		},
		"a Secret set back to the previous private key re-accepts it": {
			obj: keyClient("", expiring, nextEntry), secret: withKey(curKey), want: ActionAdopt,
		},
		"a lost status is rebuilt from the private key": {
			obj: keyClient(""), secret: withKey(curKey), want: ActionRecoverStatus,
		},
		"a private key of another algorithm, written by a person, is refused": {
			obj: keyClient("", curEntry), secret: withKey(edKey), want: ActionRefuseWeak,
		},
		"a private_key that is not PEM is refused": {
			obj: keyClient("", curEntry), secret: withKey("not a key"), want: ActionRefuseWeak,
		},
		"a client secret written as the private_key is refused": {
			obj: keyClient("", curEntry), secret: withKey(next), want: ActionRefuseWeak,
		},
		"switching to secrets with the current key's public thumbprint input as the secret is refused": {
			obj: clientWith(curEntry), secret: ownedSecret(thumbprintInput(curEntry)), want: ActionRefuseWeak,
		},
		"switching to a key pair whose fingerprint collides with the current secret's hash adopts the key": {
			obj: keyClient("", entry(thumbprintInput(curEntry), nil)), secret: withKey(curKey), want: ActionAdopt,
		},
		"a key pair with the previous kind's secret still unexpiring completes the switch": {
			obj: keyClient("", entry(current, nil), curEntry), secret: withKey(curKey), want: ActionCompleteRotation,
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideSecret(tc.obj, tc.secret, now)
			if got.Action != tc.want || got.Rotation != tc.reason {
				t.Fatalf("action %s/%q (%s), want %s/%q", got.Action, got.Rotation, got.Why, tc.want, tc.reason)
			}
			if strings.Contains(got.Why, "PRIVATE KEY") {
				t.Fatal("the decision quotes the key")
			}
		})
	}
}

// thumbprintInput is the RFC 7638 input of an EC key's entry: public, and hashed into its hash.
func thumbprintInput(e m2mv1alpha1.AcceptedSecret) string {
	return `{"crv":"P-256","kty":"EC","x":"` + e.PublicKey.X + `","y":"` + e.PublicKey.Y + `"}`
}

func TestAKeyPairEntryCarriesThePublicKeyNamedByItsThumbprint(t *testing.T) {
	pemKey, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}.Issue()
	if err != nil {
		t.Fatal(err)
	}
	e, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}.Entry(pemKey, now)
	if err != nil {
		t.Fatal(err)
	}
	if e.PublicKey == nil || e.Hash != credentials.HashPrefix+e.PublicKey.KeyID || e.PublicKey.Algorithm != "EdDSA" || e.LastFour != "" {
		t.Fatalf("entry %+v", e)
	}
	if (credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmEdDSA}).Fingerprint(pemKey) != e.Hash {
		t.Fatal("the fingerprint of the private key is not the entry's hash")
	}
	if strings.Contains(e.PublicKey.X+e.PublicKey.Y+e.PublicKey.N, strings.Split(pemKey, "\n")[1]) {
		t.Fatal("the entry carries private key material")
	}
}
