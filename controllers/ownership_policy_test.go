package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// orphanSecret is the Secret that the manager leaves behind when client "c" of spec.secret.deletionPolicy Orphan,
// which held "m2m-id", is deleted; edit changes it.
func orphanSecret(edit func(*corev1.Secret)) *corev1.Secret {
	s := ownedSecret(current)
	s.OwnerReferences = nil
	s.Labels = map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue, m2mv1alpha1.ClientLabel: "c"}
	s.Annotations = map[string]string{m2mv1alpha1.OrphanAnnotation: string(m2mv1alpha1.SecretDeletionPolicyOrphan)}
	if edit != nil {
		edit(s)
	}
	return s
}

func TestOwnedBy(t *testing.T) {
	otherController := ownedSecret(current)
	otherController.OwnerReferences[0].Name = "someone-else"
	otherKind := ownedSecret(current)
	otherKind.OwnerReferences[0].APIVersion, otherKind.OwnerReferences[0].Kind = "apps/v1", "Deployment"
	restored := ownedSecret(current)
	restored.OwnerReferences[0].UID = "uid-before-backup"
	for sentence, tc := range map[string]struct {
		secret *corev1.Secret
		id     string
		want   SecretOwnership
	}{
		"a Secret whose controller reference names the client is its own":                     {ownedSecret(current), "m2m-id", SecretOwned},
		"a Secret of the client restored from a backup with a new UID is its own":             {restored, "m2m-id", SecretOwned},
		"a Secret controlled by another M2MClient is foreign, whatever it carries":            {otherController, "m2m-id", SecretForeign},
		"a Secret controlled by another kind of object is foreign":                            {otherKind, "m2m-id", SecretForeign},
		"an orphan of this namespace and name that carries the bound client ID is taken back": {orphanSecret(nil), "m2m-id", SecretOrphaned},
		"an orphan that carries an ID not bound to this namespace and name is foreign": {
			orphanSecret(func(s *corev1.Secret) { s.Data[m2mv1alpha1.SecretKeyClientID] = []byte("m2m-another-namespaces") }), "m2m-id", SecretForeign},
		"an orphan is foreign to a client that holds no binding yet": {orphanSecret(nil), "", SecretForeign},
		"an orphan with no client ID is foreign to a client that holds none": {
			orphanSecret(func(s *corev1.Secret) { delete(s.Data, m2mv1alpha1.SecretKeyClientID) }), "", SecretForeign},
		"an orphan whose label names another client is foreign": {
			orphanSecret(func(s *corev1.Secret) { s.Labels[m2mv1alpha1.ClientLabel] = "other" }), "m2m-id", SecretForeign},
		"a Secret without the manager's label is foreign": {
			orphanSecret(func(s *corev1.Secret) { delete(s.Labels, m2mv1alpha1.ManagedByLabel) }), "m2m-id", SecretForeign},
		"a Secret of a Delete client whose owner reference someone removed is foreign": {
			orphanSecret(func(s *corev1.Secret) { s.Annotations = nil }), "m2m-id", SecretForeign},
		"a Secret whose orphan marker says something else is foreign": {
			orphanSecret(func(s *corev1.Secret) { s.Annotations[m2mv1alpha1.OrphanAnnotation] = "Delete" }), "m2m-id", SecretForeign},
	} {
		t.Run(sentence, func(t *testing.T) {
			got, why := OwnedBy(tc.secret, clientWith(), tc.id)
			if got != tc.want {
				t.Fatalf("got %s (%s), want %s", got, why, tc.want)
			}
			if got.MayWrite() != (why == "") {
				t.Fatalf("%s with the reason %q: a refusal must say why, and only a refusal", got, why)
			}
		})
	}
}

// A client created again after its predecessor of spec.secret.deletionPolicy Orphan was deleted
// has an empty status and holds the binding of the old ID: its orphaned Secret's secret is
// accepted again (as a lost status is rebuilt), and no new one is issued.
func TestAClientCreatedAgainTakesBackItsOrphanedSecret(t *testing.T) {
	for sentence, tc := range map[string]struct {
		secret *corev1.Secret
		id     string
		want   SecretAction
	}{
		"the orphan carrying the bound ID is taken back with its secret": {orphanSecret(nil), "m2m-id", ActionRecoverStatus},
		"an orphan carrying another ID is left untouched":                {orphanSecret(nil), "m2m-new", ActionConflict},
		"an orphan with a weak secret is taken back but its secret is refused": {
			orphanSecret(func(s *corev1.Secret) { s.Data[m2mv1alpha1.SecretKeyClientSecret] = []byte("hunter2") }), "m2m-id", ActionRefuseWeak},
	} {
		t.Run(sentence, func(t *testing.T) {
			if d := decideSecret(clientWith(), tc.secret, credentials.ClientSecret{}, tc.id, now); d.Action != tc.want {
				t.Fatalf("got %s (%s), want %s", d.Action, d.Why, tc.want)
			}
		})
	}
}
