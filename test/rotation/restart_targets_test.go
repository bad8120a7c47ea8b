package rotation

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A rotation with a restart target writes four times: the new hash into status, the new secret
// into the Secret, the version into the target's pod template (the restart), the old hash's expiry
// into status. For every k, the manager dies after k of them; the next manager restarts the
// target for the new secret exactly once in all: a restart is neither lost nor repeated.
func TestARestartInterruptedAfterAnyWriteHappensOnceForTheNewSecret(t *testing.T) {
	for k := 0; k <= 3; k++ {
		t.Run(fmt.Sprintf("the manager dies after %d writes", k), func(t *testing.T) {
			ctx := context.Background()
			ns := testenv.Namespace(t, env.Client)
			labels := map[string]string{"app": "web"}
			web := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Annotations: map[string]string{m2mv1alpha1.RestartOnRotationAnnotation: "c"}},
				Spec: appsv1.DeploymentSpec{
					Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: labels},
						Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
					},
				},
			}
			if err := env.Client.Create(ctx, web); err != nil {
				t.Fatal(err)
			}
			recordIs := func(secret string) func(*m2mv1alpha1.M2MClient, string) error {
				return func(_ *m2mv1alpha1.M2MClient, s string) error {
					if err := env.Client.Get(ctx, client.ObjectKeyFromObject(web), web); err != nil {
						return err
					}
					want := "c=" + controllers.RestartVersion(credentials.Hash(s))
					if secret != "" && s == secret {
						return fmt.Errorf("not rotated")
					}
					if got := web.Spec.Template.Annotations[m2mv1alpha1.RestartedForAnnotation]; got != want {
						return fmt.Errorf("the pod template records %q, want %q", got, want)
					}
					return nil
				}
			}

			first, stopFirst := startDyingManager(t, ns, k)
			key := create(t, rotatingClient(ns, "c", func(o *m2mv1alpha1.M2MClient) {
				o.Spec.Rollout = &m2mv1alpha1.RolloutPolicy{RestartTargets: []m2mv1alpha1.RestartTarget{{Kind: m2mv1alpha1.RestartKindDeployment, Name: "web"}}}
			}))
			_, s1 := settled(t, key, recordIs(""))
			before := web.Generation

			first.armed.Store(true)
			update(t, key, func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Trigger = "v2" })
			testenv.Eventually(t, wait, func() error {
				if !first.died.Load() {
					return fmt.Errorf("the manager has not reached its last write")
				}
				return nil
			})
			stopFirst()

			runManager(t, managerOptions(ns))
			settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
				if o.Status.LastRotationTrigger != "v2" {
					return fmt.Errorf("the rotation asked for is not finished")
				}
				return recordIs(s1)(o, s)
			})
			// A spec change: once its generation is reconciled, the second manager has run every
			// step, the restart of targets included, with the new secret in place.
			update(t, key, func(o *m2mv1alpha1.M2MClient) { o.Spec.Description = "looked at again" })
			settled(t, key, recordIs(s1))
			if web.Generation != before+1 {
				t.Fatalf("the Deployment's pod template changed %d times for one rotation, want once", web.Generation-before)
			}
		})
	}
}
