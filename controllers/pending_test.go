package controllers

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// A pending secret (its Secret write failed) is forgotten when its client is gone, so that
// clients created and deleted while their writes fail do not grow the manager's memory.
func TestAPendingSecretIsForgottenWhenItsClientIsGone(t *testing.T) {
	r := &M2MClientReconciler{Client: fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).Build()}
	key := types.NamespacedName{Namespace: "ns", Name: "gone"}
	r.pending.Store(key, pendingSecret{uid: "uid-1", hash: "sha256:x", value: "v"})
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.pending.Load(key); ok {
		t.Fatal("the pending secret of a deleted client is still held")
	}
}

// The API server may store a Secret write and lose its answer (a timeout, a dropped connection).
// The credential written then is the current one; whatever comes next (a revocation after a
// leak above all, with the Secret as it is, deleted or emptied, or a Secret recreated) must issue
// another, never write that one again. The reviews reproduced each of these putting the revoked
// secret back.
func TestAfterAWriteWhoseAnswerWasLostNoLaterIssueWritesThatSecretAgain(t *testing.T) {
	for sentence, tc := range map[string]struct {
		then   func(t *testing.T, c client.Client, secret types.NamespacedName)
		revoke bool
	}{
		"a revocation with the Secret as it is": {revoke: true},
		"a revocation after the Secret was deleted": {revoke: true, then: func(t *testing.T, c client.Client, secret types.NamespacedName) {
			if err := c.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secret.Namespace, Name: secret.Name}}); err != nil {
				t.Fatal(err)
			}
		}},
		"a revocation after the Secret was emptied": {revoke: true, then: emptySecret},
		"a Secret recreated after it was deleted": {then: func(t *testing.T, c client.Client, secret types.NamespacedName) {
			if err := c.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secret.Namespace, Name: secret.Name}}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(sentence, func(t *testing.T) {
			key := types.NamespacedName{Namespace: "ns", Name: "c"}
			lose := false
			funcs := interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				err := c.Update(ctx, o, opts...)
				if _, ok := o.(*corev1.Secret); ok && lose && err == nil {
					lose = false
					return errors.New("http2: client connection lost")
				}
				return err
			}}
			obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, UID: "uid-1"}}
			r, c := clientReconciler(t, enforcedKeys(t), funcs, obj)
			secretKey := types.NamespacedName{Namespace: key.Namespace, Name: secretName(obj)}
			reconcile := func() { _, _ = r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}) }
			annotate := func(name, value string) {
				t.Helper()
				got := &m2mv1alpha1.M2MClient{}
				if err := c.Get(context.Background(), key, got); err != nil {
					t.Fatal(err)
				}
				if got.Annotations == nil {
					got.Annotations = map[string]string{}
				}
				got.Annotations[name] = value
				if err := c.Update(context.Background(), got); err != nil {
					t.Fatal(err)
				}
			}
			secretValue := func() string {
				t.Helper()
				s := &corev1.Secret{}
				if err := c.Get(context.Background(), secretKey, s); err != nil {
					t.Fatal(err)
				}
				return string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
			}
			reconcile()
			first := secretValue()
			lose = true
			annotate(m2mv1alpha1.RotateAnnotation, "1")
			reconcile() // the write is stored, its answer lost
			written := secretValue()
			if written == first {
				t.Fatal("the rotation wrote nothing")
			}
			reconcile() // the rotation completes: the Secret carries the new secret
			if tc.then != nil {
				tc.then(t, c, secretKey)
			}
			if tc.revoke {
				annotate(m2mv1alpha1.RevokePreviousAnnotation, "leak")
			}
			reconcile()
			reconcile()
			if got := secretValue(); got == written || got == first {
				t.Fatal("a secret written before was issued again")
			}
			if !tc.revoke {
				return
			}
			got := &m2mv1alpha1.M2MClient{}
			if err := c.Get(context.Background(), key, got); err != nil {
				t.Fatal(err)
			}
			for _, e := range got.Status.AcceptedSecrets {
				if e.Hash == credentials.Hash(written) || e.Hash == credentials.Hash(first) {
					t.Fatalf("a revoked secret is still accepted: %+v", got.Status.AcceptedSecrets)
				}
			}
		})
	}
}

func emptySecret(t *testing.T, c client.Client, key types.NamespacedName) {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), key, s); err != nil {
		t.Fatal(err)
	}
	s.Data[m2mv1alpha1.SecretKeyClientSecret] = nil
	if err := c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// At start, a client is reconciled before the signing-key controller has written the status
// keys: an expected state, which waits without an error (every start logged one per client).
func TestAClientReconciledBeforeTheStatusKeysExistWaitsWithoutAnError(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "uid-1"}}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(obj).WithStatusSubresource(obj).Build()
	r := &M2MClientReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(10), Clock: clocktesting.NewFakeClock(now), IssuerURL: "https://m2m.example.com", KeySecret: keyRef}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
	if err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("without status keys: %+v, %v; want a wait and no error", res, err)
	}
}
