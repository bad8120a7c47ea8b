package rotation

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// nextKey is where a started rotation of spec.rotation.holder puts the next client secret.
const nextKey = m2mv1alpha1.NextSecretKeyPrefix + m2mv1alpha1.SecretKeyClientSecret

// started waits until the client's rotation of spec.rotation.holder is started and settled: the
// Secret carries the next secret that status accepts, and nothing is left to do. It returns the
// next secret.
func started(t *testing.T, key types.NamespacedName) string {
	t.Helper()
	var next string
	testenv.Eventually(t, wait, func() error {
		obj := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(context.Background(), key, obj); err != nil {
			return err
		}
		st := obj.Status.HolderRotation
		if !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) || obj.Status.ObservedGeneration != obj.Generation || st == nil || st.State != m2mv1alpha1.HolderRotationStarted {
			return fmt.Errorf("the rotation is not started at generation %d", obj.Generation)
		}
		s := &corev1.Secret{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: key.Namespace, Name: obj.Status.SecretName}, s); err != nil {
			return err
		}
		next = string(s.Data[nextKey])
		if credentials.Hash(next) != st.NextHash || controllers.DecideSecret(obj, s, clk.Now()).Action != controllers.ActionNone {
			return fmt.Errorf("the start is still in progress")
		}
		return nil
	})
	return next
}

// A rotation the holder completes writes three times to start (the next hash with the rotation
// into status, the Secret's next_client_secret, the Ready status) and twice to complete (the
// Secret's client_secret, then the other hashes dropped). For every k, a manager dies after k writes of
// the start, the next one after k writes of the completion, and a third finishes: the secret
// completed is the one the Secret offered as next, the one held before is refused, and no
// version of the Secret ever carried, under either key, a secret that status had not accepted.
func TestARotationTheHolderCompletesInterruptedAfterAnyWriteIsFinishedByTheNextManager(t *testing.T) {
	for k := 0; k <= 2; k++ {
		t.Run(fmt.Sprintf("the managers die after %d writes", k), func(t *testing.T) {
			ns := testenv.Namespace(t, env.Client)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			recorded, err := testenv.RecordCredentials(ctx, env.Config, ns)
			if err != nil {
				t.Fatal(err)
			}
			dyingManager := func() (*dying, *atomic.Bool, func()) {
				d, stop := startDyingManager(t, ns, k)
				return d, d.armed, stop
			}
			// dies asks for state with the manager armed, and waits until it has died, or when
			// k is not below the writes the step makes, until it has settled.
			dies := func(d *dying, armed *atomic.Bool, key types.NamespacedName, state m2mv1alpha1.HolderRotationState, writes int, settle func()) {
				armed.Store(true)
				update(t, key, func(o *m2mv1alpha1.M2MClient) {
					o.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: "r1", State: state}
				})
				if k < writes {
					testenv.Eventually(t, wait, func() error {
						if !d.died.Load() {
							return fmt.Errorf("the manager has not reached its last write")
						}
						return nil
					})
					return
				}
				settle()
			}

			first, armed, stopFirst := dyingManager()
			key := create(t, rotatingClient(ns, "c", func(o *m2mv1alpha1.M2MClient) {
				o.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: time.Hour}
			}))
			obj, s1 := settled(t, key, nil)
			id := obj.Status.ClientID
			dies(first, armed, key, m2mv1alpha1.HolderRotationStarted, 3, func() { started(t, key) })
			stopFirst()

			second, armed, stopSecond := dyingManager()
			next := started(t, key)
			for _, s := range []string{s1, next} {
				tokenEventually(t, id, s, http.StatusOK)
			}
			dies(second, armed, key, m2mv1alpha1.HolderRotationCompleted, 2, func() {
				settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
					if s != next {
						return fmt.Errorf("not completed")
					}
					return nil
				})
			})
			stopSecond()

			runManager(t, managerOptions(ns))
			obj, final := settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
				if st := o.Status.HolderRotation; st == nil || st.State != m2mv1alpha1.HolderRotationCompleted {
					return fmt.Errorf("the rotation is not completed")
				}
				return nil
			})
			if final != next || len(obj.Status.AcceptedSecrets) != 1 {
				t.Fatalf("completed to another secret than the next one offered (%v), or left %d entries", final != next, len(obj.Status.AcceptedSecrets))
			}
			tokenEventually(t, id, s1, http.StatusUnauthorized)
			tokenEventually(t, id, final, http.StatusOK)

			time.Sleep(300 * time.Millisecond) // let the last watch events arrive
			secretVersions, clientVersions := recorded()
			for _, dataKey := range []string{m2mv1alpha1.SecretKeyClientSecret, nextKey} {
				checked, err := testenv.AcceptedBeforeUnder(dataKey, secretVersions, clientVersions, func(o client.Object, secret string) bool {
					return credentials.Verify(o.(*m2mv1alpha1.M2MClient).Status.AcceptedSecrets, secret, clk.Now())
				})
				if err != nil {
					t.Fatal(err)
				}
				if checked == 0 {
					t.Fatalf("no Secret version with %s was observed", dataKey)
				}
			}
		})
	}
}
