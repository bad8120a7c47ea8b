package controllers

import (
	"context"
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

var (
	locationRef = types.NamespacedName{Namespace: "m2m-system", Name: m2mv1alpha1.TokenServerConfigMap}
	caRef       = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-ca"}
)

// locationReconciler is the reconciler of an https install with the CA Secret caRef, on a
// cluster of objs, and the cluster's client.
func locationReconciler(t *testing.T, objs ...client.Object) (*TokenServerConfigMapReconciler, client.Client) {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(objs...).Build()
	return &TokenServerConfigMapReconciler{Client: c, APIReader: c, ConfigMap: locationRef,
		IssuerURL: "https://m2m.example.com", CASecret: caRef, CABundleKey: servingcert.Bundle}, c
}

func caSecretWith(bundle string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: caRef.Namespace, Name: caRef.Name},
		Data: map[string][]byte{servingcert.Bundle: []byte(bundle)}}
}

func reconcileLocation(t *testing.T, r *TokenServerConfigMapReconciler, c client.Client) *corev1.ConfigMap {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: locationRef}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	if err := c.Get(context.Background(), locationRef, cm); err != nil {
		t.Fatal(err)
	}
	return cm
}

// The ConfigMap says what a credentials Secret of the same manager says about the token server:
// its issuer, token URL and CA bundle, byte for byte, with the manager's labels.
func TestTheTokenServerConfigMapSaysWhatCredentialsSecretsSay(t *testing.T) {
	r, c := locationReconciler(t, caSecretWith("CA-1"))
	cm := reconcileLocation(t, r, c)

	secrets := &M2MClientReconciler{IssuerURL: r.IssuerURL}
	s := &corev1.Secret{}
	secrets.renderData(&m2mv1alpha1.M2MClient{}, s, "m2m-id", "", []byte("CA-1"))
	for _, k := range []string{m2mv1alpha1.SecretKeyIssuer, m2mv1alpha1.SecretKeyTokenURL, m2mv1alpha1.SecretKeyCA} {
		if cm.Data[k] != string(s.Data[k]) {
			t.Errorf("the ConfigMap's %s is %q, a credentials Secret's %q", k, cm.Data[k], s.Data[k])
		}
	}
	if len(cm.Data) != 3 || cm.Data[m2mv1alpha1.SecretKeyTokenURL] != "https://m2m.example.com/oauth2/token" {
		t.Fatalf("data %v", cm.Data)
	}
	if cm.Labels[m2mv1alpha1.ManagedByLabel] != m2mv1alpha1.ManagedByValue || cm.Labels[m2mv1alpha1.ComponentLabel] != m2mv1alpha1.TokenServerLocationComponent {
		t.Fatalf("labels %v", cm.Labels)
	}
}

// A new CA bundle reaches the ConfigMap; an edit of the ConfigMap (another issuer, a key of its
// own, no label) is undone; a ConfigMap that is right is not written again.
func TestTheTokenServerConfigMapFollowsTheCABundleAndUndoesEdits(t *testing.T) {
	r, c := locationReconciler(t, caSecretWith("CA-1"))
	first := reconcileLocation(t, r, c)
	if again := reconcileLocation(t, r, c); again.ResourceVersion != first.ResourceVersion {
		t.Fatal("a ConfigMap that was right was written again")
	}

	ca := &corev1.Secret{}
	if err := c.Get(context.Background(), caRef, ca); err != nil {
		t.Fatal(err)
	}
	ca.Data[servingcert.Bundle] = []byte("CA-1\nCA-2")
	if err := c.Update(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	if got := reconcileLocation(t, r, c).Data[m2mv1alpha1.SecretKeyCA]; got != "CA-1\nCA-2" {
		t.Fatalf("ca.crt is %q after the bundle changed", got)
	}

	edited := reconcileLocation(t, r, c)
	want := maps.Clone(edited.Data)
	edited.Data[m2mv1alpha1.SecretKeyIssuer] = "https://attacker.example"
	edited.Data["extra"] = "x"
	edited.Labels = nil
	if err := c.Update(context.Background(), edited); err != nil {
		t.Fatal(err)
	}
	if got := reconcileLocation(t, r, c); !maps.Equal(got.Data, want) || got.Labels[m2mv1alpha1.ManagedByLabel] != m2mv1alpha1.ManagedByValue {
		t.Fatalf("the edit was not undone: data %v, labels %v", got.Data, got.Labels)
	}
}

// Until the CA Secret has a bundle, the ConfigMap holds the issuer and token URL without ca.crt
// and the reconciler looks again, without an error (the state of every start); a ConfigMap that
// someone planted there meanwhile does not stand (the second review had one send kubectl m2m
// why elsewhere until the CA existed). An http issuer gets one without ca.crt.
func TestTheTokenServerConfigMapWaitsForTheCABundleAndAnHTTPIssuerHasNone(t *testing.T) {
	r, c := locationReconciler(t)
	planted := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: locationRef.Namespace, Name: locationRef.Name},
		Data: map[string]string{m2mv1alpha1.SecretKeyTokenURL: "https://evil.example/oauth2/token"}}
	if err := c.Create(context.Background(), planted); err != nil {
		t.Fatal(err)
	}
	if res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: locationRef}); err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("without the CA Secret: %+v, %v; want a wait and no error", res, err)
	}
	got := &corev1.ConfigMap{}
	if err := c.Get(context.Background(), locationRef, got); err != nil {
		t.Fatal(err)
	}
	if want := tokenServerLocation(r.IssuerURL, "", nil); !maps.Equal(got.Data, want) {
		t.Fatalf("while the CA bundle is missing the ConfigMap holds %v, want %v", got.Data, want)
	}
	r.IssuerURL = "http://m2m.example.com"
	cm := reconcileLocation(t, r, c)
	if _, ok := cm.Data[m2mv1alpha1.SecretKeyCA]; ok || cm.Data[m2mv1alpha1.SecretKeyIssuer] != "http://m2m.example.com" {
		t.Fatalf("an http issuer's ConfigMap: %v", cm.Data)
	}
}

// With a public door, the issuer names the door and pods keep the Service: token_url is the
// in-cluster one and public_token_url the issuer's, in the ConfigMap as in every Secret; the
// CA bundle follows the in-cluster URL, whose certificate the manager issues, even when the
// issuer is served with the door's own certificate.
func TestAPublicDoorKeepsPodsOnTheInClusterTokenURLWithThePublicIssuer(t *testing.T) {
	r, c := locationReconciler(t, caSecretWith("CA-1"))
	r.IssuerURL, r.InClusterURL = "https://auth.example.com", "https://m2m-token-server.m2m-system.svc"
	cm := reconcileLocation(t, r, c)
	want := map[string]string{
		m2mv1alpha1.SecretKeyIssuer:         "https://auth.example.com",
		m2mv1alpha1.SecretKeyTokenURL:       "https://m2m-token-server.m2m-system.svc/oauth2/token",
		m2mv1alpha1.SecretKeyPublicTokenURL: "https://auth.example.com/oauth2/token",
		m2mv1alpha1.SecretKeyCA:             "CA-1",
	}
	if !maps.Equal(cm.Data, want) {
		t.Fatalf("the ConfigMap of a public door holds %v, want %v", cm.Data, want)
	}
	secrets := &M2MClientReconciler{IssuerURL: r.IssuerURL, InClusterURL: r.InClusterURL}
	s := &corev1.Secret{}
	secrets.renderData(&m2mv1alpha1.M2MClient{}, s, "m2m-id", "", []byte("CA-1"))
	for k, v := range want {
		if string(s.Data[k]) != v {
			t.Fatalf("the Secret's %s is %q, want %q", k, s.Data[k], v)
		}
	}

	// Closing the door (the in-cluster URL back to the issuer) leaves no stale public URL.
	secrets.InClusterURL = ""
	secrets.renderData(&m2mv1alpha1.M2MClient{}, s, "m2m-id", "", []byte("CA-1"))
	if _, ok := s.Data[m2mv1alpha1.SecretKeyPublicTokenURL]; ok || string(s.Data[m2mv1alpha1.SecretKeyTokenURL]) != "https://auth.example.com/oauth2/token" {
		t.Fatalf("after the door closed the Secret holds token_url %q and public_token_url %q", s.Data[m2mv1alpha1.SecretKeyTokenURL], s.Data[m2mv1alpha1.SecretKeyPublicTokenURL])
	}
}

func TestTheServingCertificateCoversTheNamesPodsUseAndNeverThePublicDoor(t *testing.T) {
	svc := []string{"m2m-token-server", "m2m-token-server.m2m-system.svc"}
	for sentence, tc := range map[string]struct {
		issuer, inCluster string
		want              []string
	}{
		"without a door, the issuer's host and the Service's names": {issuer: "https://m2m-token-server.m2m-system.svc", want: []string{"m2m-token-server.m2m-system.svc", "m2m-token-server"}},
		"with a door, the in-cluster host and not the door's name":  {issuer: "https://auth.example.com", inCluster: "https://127.0.0.1:8443", want: append([]string{"127.0.0.1"}, svc...)},
	} {
		got, err := servingCertHosts(tc.issuer, tc.inCluster, svc)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", sentence, got, err, tc.want)
		}
	}
}
