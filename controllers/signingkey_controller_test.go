package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

var keyRef = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-signing-keys"}

// One reconcile step of the signing-key controller, on controller-runtime's fake client.
func reconcileKeys(t *testing.T, alg signingkeys.Algorithm, objs ...client.Object) (*corev1.Secret, ctrl.Result) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = m2mv1alpha1.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	policy := signingkeys.DefaultPolicy
	policy.Algorithm = alg
	r := &SigningKeyReconciler{Client: c, APIReader: c, Clock: clocktesting.NewFakeClock(now), Secret: keyRef, Policy: policy}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: keyRef})
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), keyRef, s); err != nil {
		t.Fatal(err)
	}
	return s, res
}

func keySecret(data string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: keyRef.Namespace, Name: keyRef.Name}, Data: map[string][]byte{signingkeys.DataKey: []byte(data)}}
}

func TestAMissingSigningKeySecretIsCreatedWithOneActiveKeyOfTheConfiguredAlgorithm(t *testing.T) {
	for _, alg := range signingkeys.Algorithms {
		s, _ := reconcileKeys(t, alg)
		set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
		if err != nil {
			t.Fatal(err)
		}
		if len(set.Keys) != 1 || set.Active() == nil || set.Active().Algorithm != alg || set.Active().ActiveAt == nil {
			t.Fatalf("%s: key set %+v", alg, set.Keys)
		}
		if s.Labels[m2mv1alpha1.ManagedByLabel] != m2mv1alpha1.ManagedByValue || s.Labels[m2mv1alpha1.ComponentLabel] != m2mv1alpha1.SigningKeyComponent {
			t.Fatalf("labels %v", s.Labels)
		}
	}
}

func TestASigningKeySetWithoutAnActiveKeyGetsOneAndKeepsItsOtherKeys(t *testing.T) {
	retired, _ := signingkeys.Generate(signingkeys.RS256, signingkeys.StateRetired, now.Add(-time.Hour))
	data, _ := (&signingkeys.Set{Keys: []*signingkeys.Key{retired}}).Encode()
	s, _ := reconcileKeys(t, signingkeys.ES256, keySecret(string(data)))
	set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Find(retired.KID) == nil || set.Active() == nil || set.Active().Algorithm != signingkeys.ES256 {
		t.Fatalf("keys %+v", set.Keys)
	}
}

func TestADamagedSigningKeySecretIsNeverOverwritten(t *testing.T) {
	s, res := reconcileKeys(t, signingkeys.ES256, keySecret(`{"keys": [{"kid": "x", "state": "active", "privateKey": "AAAA"}]}`))
	if string(s.Data[signingkeys.DataKey]) != `{"keys": [{"kid": "x", "state": "active", "privateKey": "AAAA"}]}` {
		t.Fatal("the damaged Secret was overwritten; its keys may have been the only copy")
	}
	if res.RequeueAfter == 0 {
		t.Fatal("a damaged Secret is never looked at again")
	}
}

// A missing Secret is written from an empty one; a Secret that exists without keys is not
// missing: it is left as it is, like any the manager cannot read.
func TestAnExistingSigningKeySecretWithoutKeysIsNotTakenForAMissingOne(t *testing.T) {
	empty := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: keyRef.Namespace, Name: keyRef.Name}}
	s, res := reconcileKeys(t, signingkeys.ES256, empty)
	if len(s.Data) != 0 || res.RequeueAfter != damagedKeysRecheck {
		t.Fatalf("the Secret was filled (%d keys) or not looked at again (%s)", len(s.Data), res.RequeueAfter)
	}
}

func TestAYoungSigningKeySetIsLeftAsItIsUntilItsNextStep(t *testing.T) {
	first, res := reconcileKeys(t, signingkeys.ES256)
	if want := signingkeys.DefaultPolicy.Period - signingkeys.DefaultPolicy.Prepublish; res.RequeueAfter < want-time.Second || res.RequeueAfter > want {
		t.Fatalf("requeue after %s, want the moment the next key is due to be published (%s)", res.RequeueAfter, want)
	}
	again, _ := reconcileKeys(t, signingkeys.ES256, first)
	if string(again.Data[signingkeys.DataKey]) != string(first.Data[signingkeys.DataKey]) {
		t.Fatal("a valid key set was changed")
	}
}

func TestAChangedAlgorithmPublishesAKeyOfTheNewOneAsNext(t *testing.T) {
	first, _ := reconcileKeys(t, signingkeys.ES256)
	again, _ := reconcileKeys(t, signingkeys.RS256, first)
	set, err := signingkeys.Parse(again.Data[signingkeys.DataKey])
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Active().Algorithm != signingkeys.ES256 || set.Keys[1].State != signingkeys.StateNext || set.Keys[1].Algorithm != signingkeys.RS256 {
		t.Fatalf("keys %+v", set.Keys)
	}
}

func enforcedKeys(t *testing.T) *statusmac.Set {
	t.Helper()
	set, err := statusmac.Apply(nil, statusmac.KeyPlan{AddActive: true, Enforce: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// clientReconciler is the client controller on controller-runtime's fake client, with the
// indexes the manager registers and a signing-key Secret holding status.
func clientReconciler(t *testing.T, status *statusmac.Set, funcs interceptor.Funcs, objs ...client.Object) (*M2MClientReconciler, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = m2mv1alpha1.AddToScheme(scheme)
	statusData, _ := status.Encode()
	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: keyRef.Namespace, Name: keyRef.Name}, Data: map[string][]byte{statusmac.DataKey: statusData}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(objs, keys)...).WithStatusSubresource(&m2mv1alpha1.M2MClient{}).
		WithIndex(&m2mv1alpha1.M2MClient{}, clientIDIndex, indexClientID).
		WithIndex(&m2mv1alpha1.ClientIDBinding{}, boundClientIndex, indexBoundClient).
		WithInterceptorFuncs(funcs).Build()
	return &M2MClientReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(10), Clock: clocktesting.NewFakeClock(now), IssuerURL: "https://m2m.example.com", KeySecret: keyRef}, c
}

// Before enforcement (an upgrade), status.clientID may be whatever someone wrote. When the
// binding cannot be made (here the API server refuses it), the manager must not seal that ID:
// sealing is the manager's word that the ID is the client's.
func TestAClientIDIsNotSealedUntilItsBindingIsMade(t *testing.T) {
	set := enforcedKeys(t)
	set.EnforcedSince = nil
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "uid-1"}}
	obj.Status.ClientID = "m2m-written-by-someone"
	obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{entry(current, nil)}
	refuse := interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
		if _, ok := o.(*m2mv1alpha1.ClientIDBinding); ok {
			return apierrors.NewInvalid(schema.GroupKind{Group: "m2m.dev", Kind: "ClientIDBinding"}, o.GetName(), nil)
		}
		return c.Create(ctx, o, opts...)
	}}
	r, c := clientReconciler(t, set, refuse, obj)
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "c"}}); err == nil {
		t.Fatal("the reconcile succeeded without a binding")
	}
	got := &m2mv1alpha1.M2MClient{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	if set.VerifyClientID(got) || set.Authenticated(got) {
		t.Fatalf("the manager sealed an ID it could not bind: %+v", got.Status)
	}
}

// A client that is being deleted, and that a finalizer keeps forever, is neither sealed nor
// served: it does not hold enforcement back.
func TestAClientStuckInDeletionDoesNotHoldEnforcementBack(t *testing.T) {
	set := enforcedKeys(t)
	set.EnforcedSince = nil
	statusData, _ := set.Encode()
	keysData, _ := (&signingkeys.Set{}).Encode()
	stuck := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "stuck", Finalizers: []string{"team-a/hold"}, DeletionTimestamp: &metav1.Time{Time: now}}}
	stuck.Status.ClientID = "m2m-unsealed"
	secret := keySecret(string(keysData))
	secret.Data[statusmac.DataKey] = statusData
	s, _ := reconcileKeys(t, signingkeys.ES256, secret, stuck)
	got, err := statusmac.Parse(s.Data[statusmac.DataKey])
	if err != nil {
		t.Fatal(err)
	}
	if !got.Enforced() {
		t.Fatal("a client stuck in deletion held enforcement back")
	}
}

// One reconcile step of the client controller, on the fake client: it asks to be woken at the
// moment the next rotation is due, not before.
func TestAReconcileRequeuesForTheMomentTheNextRotationIsDue(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = m2mv1alpha1.AddToScheme(scheme)
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "uid-1"}}
	obj.Spec.Rotation.Period = &metav1.Duration{Duration: 24 * time.Hour}
	r, c := clientReconciler(t, enforcedKeys(t), interceptor.Funcs{}, obj)
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 24*time.Hour {
		t.Fatalf("requeue after %s, want exactly the rotation period", res.RequeueAfter)
	}
	got := &m2mv1alpha1.M2MClient{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.NextRotationTime == nil || !got.Status.NextRotationTime.Time.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("nextRotationTime %v", got.Status.NextRotationTime)
	}
}
