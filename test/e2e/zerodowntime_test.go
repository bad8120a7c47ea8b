package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// A consumer keeps asking for tokens with the credentials it has "mounted", and reads the
// Secret again only every kubeletDelay, as a kubelet-refreshed volume would, while the client
// rotates again and again. Within the grace period, no request may fail.
func TestAConsumerThatSeesTheSecretLateNeverFailsWhileRotationsHappen(t *testing.T) {
	const (
		kubeletDelay = 2 * time.Second
		rotations    = 8
	)
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "rotating")
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
		_, err := credentialsOf(mounted).Token(ctx)
		return err
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
			seen[string(s.Data[m2mv1alpha1.SecretKeyClientSecret])] = true
		}
	}
	time.Sleep(kubeletDelay + time.Second)
	load.stop()
	if len(seen) < rotations/2 {
		t.Fatalf("only %d distinct secrets were seen over %d rotations; the test did not exercise rotation", len(seen), rotations)
	}
	if load.failed.Load() != 0 || load.ok.Load() == 0 {
		t.Fatalf("%d of %d token requests failed across %d rotations; first: %v", load.failed.Load(), load.failed.Load()+load.ok.Load(), rotations, load.firstErr.Load())
	}
}
