package manager

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func orphaningClient(ns, name string) *m2mv1alpha1.M2MClient {
	obj := newClient(ns, name)
	obj.Spec.Secret.DeletionPolicy = m2mv1alpha1.SecretDeletionPolicyOrphan
	return obj
}

// orphaningClientFromGit is an orphaning client as a GitOps manifest has it, with the rotation
// and revocation values that it was last given: applied again, they ask for nothing.
func orphaningClientFromGit(ns, name string) *m2mv1alpha1.M2MClient {
	obj := orphaningClient(ns, name)
	obj.Spec.Rotation.Trigger, obj.Spec.Rotation.RevokeTrigger = "2026-11", "leak-2026-10"
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "r1", m2mv1alpha1.RevokePreviousAnnotation: "v1"}
	return obj
}

// envtest runs no garbage collector: a Secret without owner references is one that it would leave.
func assertOrphaned(t *testing.T, s *corev1.Secret) {
	t.Helper()
	if len(s.OwnerReferences) != 0 || s.Annotations[m2mv1alpha1.OrphanAnnotation] != "Orphan" {
		t.Fatalf("the Secret is not orphaned: owner references %+v, annotations %v", s.OwnerReferences, s.Annotations)
	}
}

// A GitOps replace (delete, then create) of a client of deletionPolicy Orphan: the Secret stays,
// and the client created again takes it back with the same client ID and the same secret,
// accepted again, with no new secret issued and no write that pods would see, although the
// manifest carries rotation and revocation values that the new object's status has not seen.
func TestAClientCreatedAgainTakesBackTheSecretItsPredecessorOrphaned(t *testing.T) {
	ns := namespace(t)
	create(t, orphaningClientFromGit(ns, "replaced"))
	before := waitReady(t, ns, "replaced", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "replaced-credentials")
	assertOrphaned(t, s)
	secret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])

	deleteAndWait(t, before)
	create(t, orphaningClientFromGit(ns, "replaced"))
	waitReady(t, ns, "replaced", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	// A rotation would follow the recovery in a reconcile of its own: one more makes sure that
	// it had its chance.
	bumpGeneration(t, ns, "replaced")
	after := waitReady(t, ns, "replaced", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if after.UID == before.UID || after.Status.ClientID != before.Status.ClientID {
		t.Fatalf("the client created again has ID %q, want its predecessor's %q", after.Status.ClientID, before.Status.ClientID)
	}
	if len(after.Status.AcceptedSecrets) != 1 || !acceptedNow(after, secret) || after.Status.AcceptedSecrets[0].ExpiresAt != nil {
		t.Fatalf("the orphaned secret is not the one accepted secret: %+v", after.Status.AcceptedSecrets)
	}
	got := secretOf(t, ns, "replaced-credentials")
	if got.UID != s.UID || got.ResourceVersion != s.ResourceVersion {
		t.Fatalf("the Secret was replaced or rewritten (UID %s→%s, resourceVersion %s→%s)", s.UID, got.UID, s.ResourceVersion, got.ResourceVersion)
	}
	waitEvents(t, ns, "replaced", m2mv1alpha1.EventStatusRecovered, 1)
	if n := events(t, ns, "replaced", m2mv1alpha1.EventCredentialsCreated); n != 1 {
		t.Fatalf("%d CredentialsCreated events: the client created again issued a secret", n)
	}
}

// The policy can change on a live client: the one write that sets the owner reference also drops
// the marker, and the other way round, and the credentials stay as they are.
func TestChangingTheDeletionPolicyUpdatesTheSecretsOwnerReference(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "switch"))
	obj := waitReady(t, ns, "switch", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if obj.Spec.Secret.DeletionPolicy != m2mv1alpha1.SecretDeletionPolicyDelete {
		t.Fatalf("deletionPolicy defaults to %q, want Delete", obj.Spec.Secret.DeletionPolicy)
	}
	secret := string(secretOf(t, ns, "switch-credentials").Data[m2mv1alpha1.SecretKeyClientSecret])
	setPolicy := func(p m2mv1alpha1.SecretDeletionPolicy, want func(*corev1.Secret) error) {
		t.Helper()
		get(t, obj)
		base := obj.DeepCopy()
		obj.Spec.Secret.DeletionPolicy = p
		if err := env.Client.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
		waitReady(t, ns, "switch", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
		testenv.Eventually(t, wait, func() error {
			s := secretOf(t, ns, "switch-credentials")
			if string(s.Data[m2mv1alpha1.SecretKeyClientSecret]) != secret {
				t.Fatal("changing the deletion policy changed the secret")
			}
			return want(s)
		})
	}
	setPolicy(m2mv1alpha1.SecretDeletionPolicyOrphan, func(s *corev1.Secret) error {
		if len(s.OwnerReferences) != 0 || s.Annotations[m2mv1alpha1.OrphanAnnotation] != "Orphan" {
			return fmt.Errorf("not orphaned yet: %+v %v", s.OwnerReferences, s.Annotations)
		}
		return nil
	})
	setPolicy(m2mv1alpha1.SecretDeletionPolicyDelete, func(s *corev1.Secret) error {
		if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != obj.UID {
			return fmt.Errorf("no controller reference to the client yet: %+v", s.OwnerReferences)
		}
		if _, ok := s.Annotations[m2mv1alpha1.OrphanAnnotation]; ok {
			return fmt.Errorf("the orphan marker is still there")
		}
		return nil
	})
}

// A tenant that can write Secrets in its namespace forges an orphan, with every mark the manager
// leaves, naming another namespace's client ID and a secret of its choosing, and creates a client
// of that name. The manager gives the client no ID that the forgery names and never accepts the
// forged secret: the ID of an orphan must be the one bound to its namespace and name.
func TestAForgedOrphanDoesNotGiveATenantAnotherNamespacesClientID(t *testing.T) {
	nsA, nsB := namespace(t), namespace(t)
	create(t, orphaningClient(nsB, "victim"))
	victim := waitReady(t, nsB, "victim", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	tenant := testenv.Tenant(t, env, nsA, testenv.GrantSecrets)
	const chosen = "Tq7vN2xKp9LmR4sW8yZb3cFh6jD1gA5eU0oIiYtXw"
	forged := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "thief-credentials",
			Labels:      map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue, m2mv1alpha1.ClientLabel: "thief"},
			Annotations: map[string]string{m2mv1alpha1.OrphanAnnotation: "Orphan"}},
		Data: map[string][]byte{
			m2mv1alpha1.SecretKeyClientID:     []byte(victim.Status.ClientID),
			m2mv1alpha1.SecretKeyClientSecret: []byte(chosen),
		},
	}
	if err := tenant.Create(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if err := tenant.Create(ctx, orphaningClient(nsA, "thief")); err != nil {
		t.Fatal(err)
	}
	thief := waitReady(t, nsA, "thief", metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict)
	if ready := meta.FindStatusCondition(thief.Status.Conditions, m2mv1alpha1.ConditionReady); !strings.Contains(ready.Message, "another client ID") {
		t.Fatalf("the conflict does not say why the orphan is not taken: %s", ready.Message)
	}
	if thief.Status.ClientID == victim.Status.ClientID || len(thief.Status.AcceptedSecrets) != 0 {
		t.Fatalf("the tenant's client got ID %q and %d accepted secrets (the victim's ID is %q)", thief.Status.ClientID, len(thief.Status.AcceptedSecrets), victim.Status.ClientID)
	}
	got := waitReady(t, nsB, "victim", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if got.Status.ClientID != victim.Status.ClientID || acceptedNow(got, chosen) {
		t.Fatalf("the victim's ID changed to %q or it accepts the forged secret", got.Status.ClientID)
	}
	if s := secretOf(t, nsA, "thief-credentials"); s.ResourceVersion != forged.ResourceVersion {
		t.Fatal("the manager wrote the forged Secret")
	}
}

// The Secret of an Orphan client has no owner reference to route its events: deleting it still
// wakes the client, which writes a new one.
func TestADeletedOrphanedSecretIsWrittenAgain(t *testing.T) {
	ns := namespace(t)
	create(t, orphaningClient(ns, "rewritten"))
	waitReady(t, ns, "rewritten", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	old := secretOf(t, ns, "rewritten-credentials")
	if err := env.Client.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	assertOrphaned(t, waitReplaced(t, old))
}
