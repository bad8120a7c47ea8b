package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

// Argo CD's Replace=true with Force=true deletes a client and creates it again. With
// spec.secret.deletionPolicy Orphan, a pod that follows the mounted Secret (volume.Project, as
// the kubelet) with pkg/m2mauth's token source never fails a request: the Secret is there all
// along with the same client ID and secret, and once the client is back, the token server
// issues tokens for that secret again. envtest runs no garbage collector, so the test plays it:
// it deletes the Secret if an owner reference names the deleted client, as the collector would.
func TestAReplacedClientOfDeletionPolicyOrphanIsInvisibleToItsPods(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := billingClient(namespace(t), "replaced")
	obj.Spec.Secret.DeletionPolicy = m2mv1alpha1.SecretDeletionPolicyOrphan
	s := readyClient(t, obj)
	id, secret := string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	key := client.ObjectKeyFromObject(s)

	dir := t.TempDir()
	writeVolume(t, dir, s)
	// The kubelet's side: the files follow the Secret; a missing Secret, or one that changed,
	// is what a pod starting now would fail on, or would have to pick up.
	var missing, changed atomic.Int64
	kubelet := startConsumer(50*time.Millisecond, func() error {
		cur := &corev1.Secret{}
		if err := env.Client.Get(ctx, key, cur); apierrors.IsNotFound(err) {
			missing.Add(1)
			return nil
		} else if err != nil {
			return err
		}
		if string(cur.Data[m2mv1alpha1.SecretKeyClientID]) != id || string(cur.Data[m2mv1alpha1.SecretKeyClientSecret]) != secret {
			changed.Add(1)
		}
		return volume.Project(dir, cur.Data)
	})
	// RefreshBefore the whole lifetime: every call asks the token server.
	ts, err := m2mauth.NewTokenSource(ctx, dir, m2mauth.RefreshBefore(obj.Spec.TokenTTL.Duration))
	if err != nil {
		t.Fatal(err)
	}
	keyfunc := jwksKeyfunc(t)
	pod := startConsumer(10*time.Millisecond, func() error {
		tok, err := ts.Token()
		if err != nil {
			return err
		}
		claims := jwt.MapClaims{}
		if _, err := jwt.ParseWithClaims(tok.AccessToken, claims, keyfunc, jwt.WithValidMethods([]string{"ES256"})); err != nil {
			return err
		}
		if sub, _ := claims.GetSubject(); sub != id {
			return fmt.Errorf("a token for %q", sub)
		}
		return nil
	})

	old := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), old); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), &m2mv1alpha1.M2MClient{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the client is still there: %v", err)
		}
		return nil
	})
	collectGarbage(t, key, old.UID)
	again := billingClient(obj.Namespace, obj.Name)
	again.Spec.Secret.DeletionPolicy = m2mv1alpha1.SecretDeletionPolicyOrphan
	readyClient(t, again)
	if again.Status.ClientID != id {
		t.Fatalf("the client created again has ID %q, want %q", again.Status.ClientID, id)
	}
	// The mounted secret gets new tokens from the token server again, not only cached ones.
	testenv.Eventually(t, wait, func() error {
		_, err := credentialsOf(s).Token(ctx)
		return err
	})
	pod.stop()
	kubelet.stop()
	if n := missing.Load() + changed.Load(); n != 0 || kubelet.failed.Load() != 0 {
		t.Fatalf("the Secret was missing %d times and changed %d times during the replace (%d reads failed: %v)", missing.Load(), changed.Load(), kubelet.failed.Load(), kubelet.firstErr.Load())
	}
	if pod.failed.Load() != 0 || pod.ok.Load() == 0 {
		t.Fatalf("%d of %d requests failed across the replace; first: %v", pod.failed.Load(), pod.failed.Load()+pod.ok.Load(), pod.firstErr.Load())
	}
	t.Logf("%d token requests across the replace, none failed", pod.ok.Load())
}

// collectGarbage deletes the Secret of key if an owner reference names uid, as Kubernetes'
// garbage collector does once the owner is gone.
func collectGarbage(t *testing.T, key types.NamespacedName, uid types.UID) {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), key, s); err != nil {
		t.Fatal(err)
	}
	for _, ref := range s.OwnerReferences {
		if ref.UID == uid {
			if err := env.Client.Delete(context.Background(), s, client.Preconditions{UID: &s.UID}); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}
