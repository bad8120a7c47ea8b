package rotation

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A client of deletionPolicy Orphan created again takes back its orphaned Secret in at most two
// writes, both of status: the recovered entry (with the rotation and revocation values counted
// as handled), then the conditions. For every k, the manager dies after k of them; the next one
// ends with the same client ID and the same secret, and the Secret never held another.
func TestTakingBackAnOrphanedSecretInterruptedAfterAnyWriteKeepsTheSecret(t *testing.T) {
	for k := 0; k <= 2; k++ {
		t.Run(fmt.Sprintf("the manager dies after %d writes", k), func(t *testing.T) {
			ns := testenv.Namespace(t, env.Client)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			recorded, err := testenv.RecordCredentials(ctx, env.Config, ns)
			if err != nil {
				t.Fatal(err)
			}
			first, stopFirst := startDyingManager(t, ns, k)
			manifest := func(o *m2mv1alpha1.M2MClient) {
				o.Spec.Secret.DeletionPolicy = m2mv1alpha1.SecretDeletionPolicyOrphan
				o.Spec.Rotation.Trigger = "v1"
			}
			key := create(t, rotatingClient(ns, "c", manifest))
			before, s1 := settled(t, key, nil)
			if err := env.Client.Delete(ctx, before); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, wait, func() error {
				if err := env.Client.Get(ctx, key, &m2mv1alpha1.M2MClient{}); !apierrors.IsNotFound(err) {
					return fmt.Errorf("still there: %v", err)
				}
				return nil
			})

			first.armed.Store(true)
			create(t, rotatingClient(ns, "c", manifest))
			if k < 2 {
				testenv.Eventually(t, wait, func() error {
					if !first.died.Load() {
						return fmt.Errorf("the manager has not reached its last write")
					}
					return nil
				})
			} else {
				settled(t, key, nil)
			}
			stopFirst()

			runManager(t, managerOptions(ns))
			after, final := settled(t, key, nil)
			if after.Status.ClientID != before.Status.ClientID || final != s1 || len(after.Status.AcceptedSecrets) != 1 || after.Status.AcceptedSecrets[0].Hash != credentials.Hash(s1) {
				t.Fatalf("after the crash the client has ID %q (was %q), its Secret another secret (%t), accepted %+v",
					after.Status.ClientID, before.Status.ClientID, final != s1, after.Status.AcceptedSecrets)
			}
			tokenEventually(t, after.Status.ClientID, s1, http.StatusOK)

			time.Sleep(300 * time.Millisecond) // let the last watch events arrive
			secretVersions, _ := recorded()
			values := map[string]bool{}
			for _, v := range secretVersions {
				if s, ok := v.Object.(*corev1.Secret); ok {
					values[string(s.Data[m2mv1alpha1.SecretKeyClientSecret])] = true
				}
			}
			if len(values) != 1 {
				t.Fatalf("the Secret held %d different secrets; taking it back issues none", len(values))
			}
		})
	}
}
