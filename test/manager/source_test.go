package manager

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// sourcesPerNamespace is the manager's bound of watched sources per namespace in this suite:
// small, so that a test can reach it.
const sourcesPerNamespace = 3

// storeManager is the field manager of the writes that play a secret store (External Secrets
// Operator's is "external-secrets").
const storeManager = "external-secrets"

func sourcedClient(ns, name, source string) *m2mv1alpha1.M2MClient {
	obj := newClient(ns, name)
	obj.Spec.Authentication.Source = &m2mv1alpha1.CredentialSource{Name: source}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: time.Hour}
	return obj
}

// storeWrites writes value under client_secret into the source Secret, as a secret store's sync
// does (creating it the first time), with no label of the manager's, and the opt-in annotation
// naming forClient that the store's template adds.
func storeWrites(t *testing.T, ns, name, forClient, value string) {
	t.Helper()
	ctx := context.Background()
	s := &corev1.Secret{}
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)
	switch {
	case apierrors.IsNotFound(err):
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{m2mv1alpha1.SourceForAnnotation: forClient}},
			Data: map[string][]byte{m2mv1alpha1.SecretKeyClientSecret: []byte(value)}}
		err = env.Client.Create(ctx, s, client.FieldOwner(storeManager))
	case err == nil:
		s.Data = map[string][]byte{m2mv1alpha1.SecretKeyClientSecret: []byte(value)}
		err = env.Client.Update(ctx, s, client.FieldOwner(storeManager))
	}
	if err != nil {
		t.Fatal(err)
	}
}

// waitCarries waits until the client's credentials Secret carries value.
func waitCarries(t *testing.T, ns, secretName, value string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: secretName}, s); err != nil {
			return err
		}
		if string(s.Data[m2mv1alpha1.SecretKeyClientSecret]) != value {
			return fmt.Errorf("the credentials Secret does not carry the source's value yet")
		}
		return nil
	})
	return s
}

// A GitOps user applies the M2MClient before the secret store has synced: the client waits,
// shows Reconciling (not Stalled), and the manager issues and writes nothing of its own. Once
// the store writes the source, its value is accepted and copied into the credentials Secret, and
// the manager never writes the source.
func TestAClientWaitsForItsSourceAndIssuesNothingOfItsOwn(t *testing.T) {
	ns := namespace(t)
	create(t, sourcedClient(ns, "billing", "billing-from-vault"))
	obj := waitReady(t, ns, "billing", metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing)
	if r := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReconciling); r == nil || r.Status != metav1.ConditionTrue {
		t.Errorf("a client waiting for its source is not Reconciling: %+v", obj.Status.Conditions)
	}
	if meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionStalled) != nil {
		t.Errorf("a client waiting for its source is Stalled")
	}
	if len(obj.Status.AcceptedSecrets) != 0 {
		t.Fatalf("the manager accepted %d credentials before the source existed", len(obj.Status.AcceptedSecrets))
	}
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "billing-credentials"}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("a credentials Secret exists before the source did (%v)", err)
	}

	value := testenv.NewSecret(t)
	storeWrites(t, ns, "billing-from-vault", "billing", value)
	obj = waitReady(t, ns, "billing", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	waitCarries(t, ns, "billing-credentials", value)
	if len(obj.Status.AcceptedSecrets) != 1 || !acceptedNow(obj, value) {
		t.Fatalf("accepted %+v, want the source's value alone", obj.Status.AcceptedSecrets)
	}
	source := secretOf(t, ns, "billing-from-vault")
	for _, f := range source.ManagedFields {
		if f.Manager != storeManager {
			t.Errorf("%s wrote the source Secret", f.Manager)
		}
	}
	if n := events(t, ns, "billing", m2mv1alpha1.EventCredentialsCreated); n != 1 {
		t.Errorf("%d CredentialsCreated events, want the one of the source's value", n)
	}
}

// The store writes a new value: the manager accepts it, writes it into the credentials Secret
// after its hash, and gives the previous value the grace period. A weak value is refused and the
// accepted one stays; a deleted source leaves the accepted credential in use.
func TestTheStoresWritesAreRotationsAndItsMistakesCostNothing(t *testing.T) {
	ns := namespace(t)
	first := testenv.NewSecret(t)
	storeWrites(t, ns, "orders-from-vault", "orders", first)
	create(t, sourcedClient(ns, "orders", "orders-from-vault"))
	waitReady(t, ns, "orders", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	waitCarries(t, ns, "orders-credentials", first)

	second := testenv.NewSecret(t)
	storeWrites(t, ns, "orders-from-vault", "orders", second)
	waitCarries(t, ns, "orders-credentials", second)
	// The grace period starts in the status write that ends the reconcile, after the Secret's.
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders"}}
	testenv.Eventually(t, wait, func() error {
		get(t, obj)
		if e := entryFor(obj, first); e == nil || e.ExpiresAt == nil {
			return fmt.Errorf("the previous value has no grace period yet: %+v", e)
		}
		return nil
	})
	if !acceptedNow(obj, second) || entryFor(obj, second).ExpiresAt != nil {
		t.Fatalf("the store's new value is not the current credential: %+v", obj.Status.AcceptedSecrets)
	}
	if e := entryFor(obj, first); e.ExpiresAt.Time.Before(e.CreatedAt.Add(50 * time.Minute)) {
		t.Fatalf("the previous value's grace period is not an hour: %+v", e)
	}
	waitEvents(t, ns, "orders", m2mv1alpha1.EventRotated, 1)

	storeWrites(t, ns, "orders-from-vault", "orders", strings.Repeat("password", 5))
	obj = waitReady(t, ns, "orders", metav1.ConditionFalse, m2mv1alpha1.ReasonWeakSecret)
	if !acceptedNow(obj, second) || string(secretOf(t, ns, "orders-credentials").Data[m2mv1alpha1.SecretKeyClientSecret]) != second {
		t.Fatal("a weak value in the source displaced the accepted credential")
	}
	if strings.Contains(obj.Status.Conditions[0].Message, "password") {
		t.Fatal("the condition quotes the refused value")
	}

	if err := env.Client.Delete(context.Background(), secretOf(t, ns, "orders-from-vault")); err != nil {
		t.Fatal(err)
	}
	obj = waitReady(t, ns, "orders", metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing)
	if !acceptedNow(obj, second) || string(secretOf(t, ns, "orders-credentials").Data[m2mv1alpha1.SecretKeyClientSecret]) != second {
		t.Fatal("a deleted source took the accepted credential with it")
	}
}

// Someone writes a value of their own into the credentials Secret of a sourced client: it is
// not adopted (the store is the credential's only origin), and the source's value is written
// back. The rotation annotation asks for nothing, and says why.
func TestTheSourceIsTheOnlyOriginOfTheCredential(t *testing.T) {
	ns := namespace(t)
	value := testenv.NewSecret(t)
	storeWrites(t, ns, "only-from-vault", "only", value)
	create(t, sourcedClient(ns, "only", "only-from-vault"))
	waitReady(t, ns, "only", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := waitCarries(t, ns, "only-credentials", value)

	planted := testenv.NewSecret(t)
	s.Data[m2mv1alpha1.SecretKeyClientSecret] = []byte(planted)
	if err := env.Client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitCarries(t, ns, "only-credentials", value)
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "only"}}
	get(t, obj)
	if entryFor(obj, planted) != nil {
		t.Fatal("a value written into the credentials Secret was accepted")
	}

	patch := annotationsPatch(t, map[string]any{m2mv1alpha1.RotateAnnotation: "now"})
	if err := env.Client.Patch(context.Background(), obj, patch); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, ns, "only", m2mv1alpha1.EventRotationNotApplicable, 1)
	get(t, obj)
	if len(obj.Status.AcceptedSecrets) != 1 || !acceptedNow(obj, value) {
		t.Fatalf("the rotation annotation changed the credentials: %+v", obj.Status.AcceptedSecrets)
	}
}

// A tenant who may create M2MClients cannot make the manager hold any number of watches: past
// the namespace's bound a new source is refused, and once a client of the namespace lets its
// source go, the refused one is read.
func TestSourcesPastTheNamespacesBoundAreRefusedUntilOneIsLetGo(t *testing.T) {
	ns := namespace(t)
	for i := range sourcesPerNamespace {
		create(t, sourcedClient(ns, fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i)))
		waitReady(t, ns, fmt.Sprintf("c%d", i), metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing)
	}
	// A client sharing a watched source costs no watch.
	create(t, sourcedClient(ns, "sharing", "s0"))
	waitReady(t, ns, "sharing", metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing)

	create(t, sourcedClient(ns, "over", "s-over"))
	obj := waitReady(t, ns, "over", metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretRefused)
	if msg := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady).Message; !strings.Contains(msg, "--max-sources-per-namespace") {
		t.Errorf("the refusal does not name the bound: %s", msg)
	}
	// Another namespace is not affected.
	other := namespace(t)
	create(t, sourcedClient(other, "elsewhere", "s-over"))
	waitReady(t, other, "elsewhere", metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing)

	deleteAndWait(t, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c1"}})
	waitReady(t, ns, "over", metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretMissing)
}

// A client takes only a Secret meant for it: one of the namespace that does not name it in its
// opt-in annotation (a database password that the tenant may not read, say) is refused, and
// nothing of it is accepted or copied into a Secret the tenant reads. The manager's own Secrets
// are never a source either: naming another client's credentials Secret, even one that opts in,
// or the client's own is refused.
func TestAClientTakesOnlyASecretThatOptsInAndNeverOneOfTheManagers(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "victim"))
	waitReady(t, ns, "victim", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	victim := secretOf(t, ns, "victim-credentials")
	victim.Annotations = map[string]string{m2mv1alpha1.SourceForAnnotation: "borrower"}
	if err := env.Client.Update(context.Background(), victim); err != nil {
		t.Fatal(err)
	}
	password := testenv.NewSecret(t)
	storeWrites(t, ns, "postgres-admin", "someone-else", password)
	for name, source := range map[string]string{"borrower": "victim-credentials", "self": "self-credentials", "snooper": "postgres-admin"} {
		create(t, sourcedClient(ns, name, source))
		obj := waitReady(t, ns, name, metav1.ConditionFalse, m2mv1alpha1.ReasonSourceSecretRefused)
		if len(obj.Status.AcceptedSecrets) != 0 {
			t.Errorf("%s, naming %s, accepted %d credentials", name, source, len(obj.Status.AcceptedSecrets))
		}
	}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "snooper-credentials"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a credentials Secret was written from a Secret that did not opt in (%v)", err)
	}
}

// Admission refuses what cannot work with a source: the manager's rotations, and a source
// without a kind of credential to supply.
func TestAdmissionRefusesRotationsTheStoreOwns(t *testing.T) {
	ns := namespace(t)
	for sentence, mutate := range map[string]func(*m2mv1alpha1.M2MClient){
		"a rotation period":  func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Period = &metav1.Duration{Duration: 24 * time.Hour} },
		"a rotation trigger": func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Trigger = "v2" },
		"a revoke trigger":   func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.RevokeTrigger = "leak" },
		"a rotation the holder ends": func(o *m2mv1alpha1.M2MClient) {
			o.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: "h1", State: m2mv1alpha1.HolderRotationStarted}
		},
		"no secret and no key pair": func(o *m2mv1alpha1.M2MClient) {
			f := false
			o.Spec.Authentication.ClientSecret = &f
			o.Spec.Authentication.ServiceAccounts = []string{"default"}
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			obj := sourcedClient(ns, "refused", "from-vault")
			mutate(obj)
			err := env.Client.Create(context.Background(), obj, client.DryRunAll)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("a source with %s was admitted (%v)", sentence, err)
			}
		})
	}
}
