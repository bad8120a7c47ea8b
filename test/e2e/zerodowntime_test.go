package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// A consumer keeps asking for tokens with the credentials it has "mounted", and reads the
// Secret again only every kubeletDelay, as a kubelet-refreshed volume would, while the client
// rotates again and again. Within the grace period, no request may fail.
func TestAConsumerThatSeesTheSecretLateNeverFailsWhileRotationsHappen(t *testing.T) {
	obj := billingClient(namespace(t), "rotating")
	rotateUnderLoad(t, obj, m2mv1alpha1.SecretKeyClientSecret, func(mounted *corev1.Secret) error {
		_, err := credentialsOf(mounted).Token(context.Background())
		return err
	})
}

// The same for a key pair the manager generates: each request signs a new assertion with the
// private key the consumer has mounted, and the previous public key stays accepted for the grace
// period, so no request fails across the rotations.
func TestAGeneratedKeyPairRotatesUnderLoadWithoutAFailedRequest(t *testing.T) {
	obj := billingClient(namespace(t), "rotating-key")
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
	rotateUnderLoad(t, obj, m2mv1alpha1.SecretKeyPrivateKey, func(mounted *corev1.Secret) error {
		ts, err := keyPairTokenSource(mounted)
		if err != nil {
			return err
		}
		_, err = ts.Token()
		return err
	})
}

// rotateUnderLoad makes obj Ready, then rotates it eight times (spec.rotation.trigger) while a
// consumer calls request with the Secret it last "mounted", and fails on any failed request.
// credential is the Secret's key that a rotation changes.
func rotateUnderLoad(t *testing.T, obj *m2mv1alpha1.M2MClient, credential string, request func(mounted *corev1.Secret) error) {
	const (
		kubeletDelay = 2 * time.Second
		rotations    = 8
	)
	ctx := context.Background()
	ns := obj.Namespace
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 10 * time.Second}
	readyClient(t, obj)
	key := client.ObjectKeyFromObject(obj)

	read := func() (*corev1.Secret, error) {
		s := &corev1.Secret{}
		return s, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: obj.Status.SecretName}, s)
	}
	mounted, err := read()
	if err != nil {
		t.Fatal(err)
	}
	refreshed := time.Now()
	// The consumer's only goroutine owns mounted and refreshed.
	load := startConsumer(10*time.Millisecond, func() error {
		if time.Since(refreshed) >= kubeletDelay {
			if s, err := read(); err == nil {
				mounted, refreshed = s, time.Now()
			}
		}
		return request(mounted)
	})

	seen := map[string]bool{}
	for i := range rotations {
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			o := &m2mv1alpha1.M2MClient{}
			if err := env.Client.Get(ctx, key, o); err != nil {
				return err
			}
			o.Spec.Rotation.Trigger = fmt.Sprintf("rotation-%d", i)
			return env.Client.Update(ctx, o)
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
		if s, err := read(); err == nil {
			seen[string(s.Data[credential])] = true
		}
	}
	time.Sleep(kubeletDelay + time.Second)
	load.stop()
	if len(seen) < rotations/2 || seen[""] {
		t.Fatalf("only %d distinct credentials (or an empty one) were seen over %d rotations; the test did not exercise rotation", len(seen), rotations)
	}
	if load.failed.Load() != 0 || load.ok.Load() == 0 {
		t.Fatalf("%d of %d token requests failed across %d rotations; first: %v", load.failed.Load(), load.failed.Load()+load.ok.Load(), rotations, load.firstErr.Load())
	}
}

// keyPairTokenSource is what a pod with the key-pair Secret mounted uses: its private_key signs
// the assertions.
func keyPairTokenSource(s *corev1.Secret) (oauth2.TokenSource, error) {
	key, _, err := jwk.ParsePrivateKeyPEM(s.Data[m2mv1alpha1.SecretKeyPrivateKey])
	if err != nil {
		return nil, err
	}
	return m2mauth.NewPrivateKeyTokenSource(context.Background(), m2mauth.PrivateKeyClient{
		ClientID: string(s.Data[m2mv1alpha1.SecretKeyClientID]), TokenURL: string(s.Data[m2mv1alpha1.SecretKeyTokenURL]),
		Issuer: string(s.Data[m2mv1alpha1.SecretKeyIssuer]), Key: key})
}
