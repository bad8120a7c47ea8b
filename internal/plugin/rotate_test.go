package plugin

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// rotate --revoke-previous waits until the manager has finished the revocation it asked for, not
// merely started it, and then says what happened: where the new credential is, how many earlier
// ones are no longer accepted, that pods holding one are refused until they read the Secret again,
// and that tokens already issued stay valid.
func TestRotateRevokePreviousWaitsForTheRevocationToEndAndSaysWhatItMeans(t *testing.T) {
	later := metav1.NewTime(time.Now().Add(time.Hour))
	entry := func(hash string, expires *metav1.Time) m2mv1alpha1.AcceptedSecret {
		return m2mv1alpha1.AcceptedSecret{Hash: hash, CreatedAt: metav1.Now(), ExpiresAt: expires}
	}
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "leaked"}}
	obj.Spec.TokenTTL = &metav1.Duration{Duration: 15 * time.Minute}
	obj.Status.SecretName = "leaked-credentials"
	obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{entry("sha256:a", &later), entry("sha256:b", &later), entry("sha256:c", nil)}
	// The manager, as the plugin sees it through its reads after the patch: the first shows the
	// revocation started (its new entry accepted, the earlier ones still there), the next its end.
	reads := 0
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(obj).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			if err := cl.Get(ctx, key, o, opts...); err != nil {
				return err
			}
			m := o.(*m2mv1alpha1.M2MClient)
			value := m.Annotations[m2mv1alpha1.RevokePreviousAnnotation]
			if value == "" {
				return nil
			}
			reads++
			m.Status.LastRevokeAnnotation = value
			m.Status.AcceptedSecrets = append(m.Status.AcceptedSecrets, entry("sha256:d", nil))
			m.Status.RevocationPending = true
			if reads > 1 {
				now := metav1.Now()
				m.Status.AcceptedSecrets = m.Status.AcceptedSecrets[3:]
				m.Status.RevocationPending, m.Status.LastRevocationTime = false, &now
			}
			return nil
		},
	}).Build()
	var out bytes.Buffer
	if err := revoke(context.Background(), c, &out, types.NamespacedName{Namespace: "team-a", Name: "leaked"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if reads < 2 {
		t.Fatalf("the plugin returned after %d reads, while the revocation was still in progress", reads)
	}
	for _, want := range []string{
		"a new client secret is in Secret leaked-credentials", "3 earlier credential(s) are no longer accepted",
		"refused until they read Secret leaked-credentials again", "Tokens already issued stay valid until they expire (at most 15m0s",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}

// kubectl m2m rotate on a client whose credential a secret store writes asks the manager for
// nothing (it would only warn), and says where to rotate instead.
func TestRotateRefusesAClientWhoseStoreWritesTheCredential(t *testing.T) {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "vaulted"}}
	obj.Spec.Authentication.Source = &m2mv1alpha1.CredentialSource{Name: "vaulted-from-vault"}
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(obj).Build()
	err := rotatedByTheManager(context.Background(), c, types.NamespacedName{Namespace: "team-a", Name: "vaulted"})
	if !errors.Is(err, errRotatedByTheStore) || !strings.Contains(err.Error(), "vaulted-from-vault") {
		t.Fatalf("got %v, want a refusal that names the source", err)
	}
	obj.Spec.Authentication.Source = nil
	plain := obj.DeepCopy()
	plain.Name, plain.ResourceVersion = "plain", ""
	if err := c.Create(context.Background(), plain); err != nil {
		t.Fatal(err)
	}
	if err := rotatedByTheManager(context.Background(), c, types.NamespacedName{Namespace: "team-a", Name: "plain"}); err != nil {
		t.Fatalf("a client the manager rotates was refused: %v", err)
	}
}
