package tls

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// An emergency CA rotation under token load, during a planned one: the CA and its successor leave
// the bundle, every credentials Secret's ca.crt and the install's published ca.crt at once, the token server serves a certificate
// of a new CA, a pod whose mounted Secret has the new ca.crt gets tokens, a TLS client that trusts
// only a CA of before is refused by the handshake, and no client's credentials change. The same
// value again does nothing.
func TestAnEmergencyCARotationDropsEveryOldCAAtOnceAndLeavesCredentialsAlone(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "payroll"},
		Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices"}}}
	testenv.CreateReady(t, env.Client, obj, wait)
	dir := mountCredentials(t, types.NamespacedName{Namespace: ns, Name: "payroll-credentials"}, 500*time.Millisecond)
	load := startTokenLoad(t, dir)

	// A planned rotation puts a successor in the bundle, which the emergency must drop too.
	annotate(t, caSecret, "before-emergency")
	testenv.Eventually(t, wait, func() error {
		if len(secret(t, caSecret).Data[servingcert.NextCert]) == 0 {
			return errors.New("no next CA yet")
		}
		return nil
	})
	before := secret(t, caSecret)
	oldCAs := [][]byte{before.Data[servingcert.CACert], before.Data[servingcert.NextCert]}
	credentials := credentialsOfEveryClient(t)

	annotateWith(t, caSecret, keyring.EmergencyAnnotation, "leak-1")
	var newCA *x509.Certificate
	testenv.Eventually(t, wait, func() error {
		ca := secret(t, caSecret)
		if ca.Annotations[keyring.EmergencyRotatedAnnotation] != "leak-1" {
			return errors.New("the emergency is not done")
		}
		if bytes.Count(ca.Data[servingcert.Bundle], []byte("BEGIN CERTIFICATE")) != 1 || len(ca.Data[servingcert.NextCert]) > 0 || len(ca.Data[servingcert.PreviousCert]) > 0 {
			return errors.New("the bundle holds more than the new CA")
		}
		var err error
		if newCA, err = servingcert.ParseCert(ca.Data[servingcert.CACert]); err != nil {
			return err
		}
		if served(t).CheckSignatureFrom(newCA) != nil {
			return errors.New("the token server does not serve a certificate of the new CA yet")
		}
		var list corev1.SecretList
		if err := env.Client.List(ctx, &list, client.HasLabels{m2mv1alpha1.ClientLabel}); err != nil {
			return err
		}
		for _, s := range list.Items {
			if !bytes.Equal(s.Data[m2mv1alpha1.SecretKeyCA], ca.Data[servingcert.Bundle]) {
				return fmt.Errorf("the ca.crt of %s/%s is not the new bundle yet", s.Namespace, s.Name)
			}
		}
		if mounted, err := os.ReadFile(filepath.Join(dir, m2mv1alpha1.SecretKeyCA)); err != nil || !bytes.Equal(mounted, ca.Data[servingcert.Bundle]) {
			return errors.New("the mounted ca.crt is not the new bundle yet")
		}
		published := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, locationKey, published); err != nil {
			return err
		}
		if published.Data[m2mv1alpha1.SecretKeyCA] != string(ca.Data[servingcert.Bundle]) {
			return errors.New("the ca.crt that the manager publishes for kubectl m2m is not the new bundle yet")
		}
		return nil
	})
	switched := time.Now()
	for _, old := range oldCAs {
		if bytes.Contains(secret(t, caSecret).Data[servingcert.Bundle], bytes.TrimSpace(old)) {
			t.Fatal("a CA of before the emergency is still in the bundle")
		}
	}

	// The pod, with the new ca.crt mounted, gets tokens from every request that starts now.
	load.waitFor(t, 20)
	if load.failedSince(switched) {
		t.Fatalf("a token request with the new ca.crt mounted failed: %v", load.firstErr.Load())
	}
	load.Stop()
	t.Logf("%d token requests, %d failed before the pod's mounted Secret and the token server both had the new CA", load.ok.Load()+load.failed.Load(), load.failed.Load())

	for _, old := range oldCAs {
		cert, err := servingcert.ParseCert(old)
		if err != nil {
			t.Fatal(err)
		}
		var unknown x509.UnknownAuthorityError
		if err := handshake(cert); !errors.As(err, &unknown) {
			t.Fatalf("a client that trusts only a CA of before the emergency: %v; want the handshake refused for an unknown authority", err)
		}
	}
	if err := handshake(newCA); err != nil {
		t.Fatalf("a client that trusts the new CA: %v", err)
	}
	if after := credentialsOfEveryClient(t); !equalCredentials(after, credentials) {
		t.Fatal("an emergency CA rotation changed a client's credentials")
	}

	// The same value again, beside a change that wakes the reconciler, replaces nothing. A
	// certificate asked for afterwards is issued by a reconcile that has seen it (one watch of
	// the Secrets, in order), and that would have replaced the CA first.
	rv := secret(t, caSecret).ResourceVersion
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"leak-1","team":"platform"}}}`, keyring.EmergencyAnnotation))
	if err := env.Client.Patch(ctx, secret(t, caSecret), client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	annotated := secret(t, caSecret)
	if annotated.ResourceVersion == rv {
		t.Fatal("the patch changed nothing, so it woke nothing")
	}
	annotate(t, certSecret, "after-leak-1")
	testenv.Eventually(t, wait, func() error {
		if secret(t, certSecret).Annotations[keyring.RotatedAnnotation] != "after-leak-1" {
			return errors.New("the certificate asked for is not issued yet")
		}
		return nil
	})
	if s := secret(t, caSecret); s.ResourceVersion != annotated.ResourceVersion || !bytes.Equal(s.Data[servingcert.CACert], annotated.Data[servingcert.CACert]) {
		t.Fatal("the emergency value already acted on replaced the CA again")
	}
}

// An impersonated tenant with every right in its own namespace can neither read the CA Secret
// nor annotate it: an emergency, and the CA's key, are the operator's.
func TestATenantCanNeitherReadNorAnnotateTheCASecret(t *testing.T) {
	ctx := context.Background()
	tenant := testenv.Tenant(t, env, testenv.Namespace(t, env.Client), testenv.GrantStatus)
	if err := tenant.Get(ctx, caSecret, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant read the CA Secret: %v", err)
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"tenant"}}}`, keyring.EmergencyAnnotation))
	target := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: caSecret.Namespace, Name: caSecret.Name}}
	if err := tenant.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch)); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant annotated the CA Secret: %v", err)
	}
	if secret(t, caSecret).Annotations[keyring.EmergencyAnnotation] == "tenant" {
		t.Fatal("the tenant's annotation is on the CA Secret")
	}
}

// handshake connects to the token server trusting ca alone.
func handshake(ca *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	conn, err := tls.Dial("tcp", issuer[len("https://"):], &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	return conn.Close()
}

// clientCredentials are what a client's pods authenticate with: the hashes its status accepts
// and the secret its Secret carries.
type clientCredentials struct {
	accepted []string
	secret   []byte
}

func credentialsOfEveryClient(t *testing.T) map[types.NamespacedName]clientCredentials {
	t.Helper()
	var clients m2mv1alpha1.M2MClientList
	var secrets corev1.SecretList
	if err := env.Client.List(context.Background(), &clients); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.List(context.Background(), &secrets, client.HasLabels{m2mv1alpha1.ClientLabel}); err != nil {
		t.Fatal(err)
	}
	out := map[types.NamespacedName]clientCredentials{}
	for _, c := range clients.Items {
		var cc clientCredentials
		for _, a := range c.Status.AcceptedSecrets {
			cc.accepted = append(cc.accepted, a.Hash)
		}
		out[client.ObjectKeyFromObject(&c)] = cc
	}
	for _, s := range secrets.Items {
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[m2mv1alpha1.ClientLabel]}
		cc := out[key]
		cc.secret = s.Data[m2mv1alpha1.SecretKeyClientSecret]
		out[key] = cc
	}
	return out
}

func equalCredentials(a, b map[types.NamespacedName]clientCredentials) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || !slices.Equal(x.accepted, y.accepted) || subtle.ConstantTimeCompare(x.secret, y.secret) != 1 {
			return false
		}
	}
	return true
}
