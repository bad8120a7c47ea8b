package rotation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func create(t *testing.T, obj *m2mv1alpha1.M2MClient) types.NamespacedName {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	return client.ObjectKeyFromObject(obj)
}

func update(t *testing.T, key types.NamespacedName, mutate func(*m2mv1alpha1.M2MClient)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(context.Background(), key, obj); err != nil {
			return err
		}
		mutate(obj)
		return env.Client.Update(context.Background(), obj)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestAScheduledRotationHappensOnceAndTheOldSecretWorksUntilItsGracePeriodEnds(t *testing.T) {
	key := create(t, rotatingClient(sharedNamespace, "scheduled", func(o *m2mv1alpha1.M2MClient) {
		o.Spec.Rotation.Period = &metav1.Duration{Duration: 24 * time.Hour}
		o.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: time.Hour}
	}))
	obj, first := settled(t, key, nil)
	id := obj.Status.ClientID
	if obj.Status.NextRotationTime == nil || !obj.Status.NextRotationTime.Time.Equal(obj.Status.LastRotationTime.Add(24*time.Hour)) {
		t.Fatalf("nextRotationTime %v, want lastRotationTime + 24h", obj.Status.NextRotationTime)
	}
	tokenEventually(t, id, first, http.StatusOK)

	// Just before the period ends, nothing happens.
	clk.Step(24*time.Hour - time.Minute)
	poke(t, key)
	_, same := settled(t, key, nil)
	if same != first || rotations(t, key) != 0 {
		t.Fatal("the secret rotated before its period ended")
	}

	clk.Step(2 * time.Minute)
	rotatedAt := clk.Now()
	poke(t, key)
	obj, second := settled(t, key, func(_ *m2mv1alpha1.M2MClient, s string) error {
		if s == first {
			return fmt.Errorf("not rotated yet")
		}
		return nil
	})
	if !obj.Status.LastRotationTime.Time.Equal(rotatedAt.Truncate(time.Second)) || !obj.Status.NextRotationTime.Time.Equal(rotatedAt.Truncate(time.Second).Add(24*time.Hour)) {
		t.Fatalf("lastRotationTime %v nextRotationTime %v", obj.Status.LastRotationTime, obj.Status.NextRotationTime)
	}
	testenv.Eventually(t, wait, func() error {
		if n := rotations(t, key); n != 1 {
			return fmt.Errorf("%d Rotated events", n)
		}
		return nil
	})
	tokenEventually(t, id, second, http.StatusOK)
	if got := tokenStatus(t, id, first); got != http.StatusOK {
		t.Fatalf("the previous secret was refused (%d) inside its grace period", got)
	}

	// Nudging again rotates nothing more.
	poke(t, key)
	if _, s := settled(t, key, nil); s != second || rotations(t, key) != 1 {
		t.Fatal("a second rotation happened for one period")
	}

	// After the grace period the previous secret is refused, and pruned from status.
	clk.Step(time.Hour + time.Second)
	if got := tokenStatus(t, id, first); got != http.StatusUnauthorized {
		t.Fatalf("the previous secret got %d after its grace period, want 401", got)
	}
	poke(t, key)
	settled(t, key, func(o *m2mv1alpha1.M2MClient, _ string) error {
		if len(o.Status.AcceptedSecrets) != 1 {
			return fmt.Errorf("expired secret not pruned: %+v", o.Status.AcceptedSecrets)
		}
		return nil
	})
	tokenEventually(t, id, second, http.StatusOK)
}

func TestATriggerAndTheRotateAnnotationRotateExactlyOnceEach(t *testing.T) {
	key := create(t, rotatingClient(sharedNamespace, "gitops", func(o *m2mv1alpha1.M2MClient) {
		o.Spec.Rotation.Trigger = "v1"
		o.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "initial"}
	}))
	obj, s1 := settled(t, key, nil)
	if obj.Status.LastRotationTrigger != "v1" || obj.Status.LastRotateAnnotation != "initial" || rotations(t, key) != 0 {
		t.Fatalf("values present at creation must count as handled without a rotation: %+v", obj.Status)
	}

	update(t, key, func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Trigger = "v2" })
	_, s2 := settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
		if s == s1 || o.Status.LastRotationTrigger != "v2" {
			return fmt.Errorf("trigger v2 not handled")
		}
		return nil
	})
	poke(t, key)
	poke(t, key)
	if _, s := settled(t, key, nil); s != s2 {
		t.Fatal("one trigger value rotated twice")
	}

	update(t, key, func(o *m2mv1alpha1.M2MClient) { o.Annotations[m2mv1alpha1.RotateAnnotation] = "2026-11-28T12:00" })
	_, s3 := settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
		if s == s2 || o.Status.LastRotateAnnotation != "2026-11-28T12:00" {
			return fmt.Errorf("annotation not handled")
		}
		return nil
	})
	poke(t, key)
	if _, s := settled(t, key, nil); s != s3 {
		t.Fatal("one annotation value rotated twice")
	}

	// Removing the trigger from Git asks for nothing.
	update(t, key, func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Trigger = "" })
	if _, s := settled(t, key, nil); s != s3 {
		t.Fatal("removing the trigger rotated")
	}
	testenv.Eventually(t, wait, func() error {
		if n := rotations(t, key); n != 2 {
			return fmt.Errorf("%d Rotated events, want 2", n)
		}
		return nil
	})
}

var errDead = errors.New("injected: the manager died here")

// dying is a client whose writes fail, once armed, after the first k: as if the process died
// after its k-th write. Reads still work, as they would have until the process died.
type dying struct {
	client.Client
	k      int64
	armed  *atomic.Bool
	writes atomic.Int64
	died   atomic.Bool
}

// gate counts the writes of the credential sequence (M2MClients and Secrets) and refuses every
// write once the process is dead. The bindings' revocation records are written by another
// controller at its own pace; counting them would make k depend on which controller ran first.
func (d *dying) gate(o client.Object) error {
	if !d.armed.Load() {
		return nil
	}
	if d.died.Load() {
		return errDead
	}
	if _, binding := o.(*m2mv1alpha1.ClientIDBinding); binding {
		return nil
	}
	if d.writes.Add(1) > d.k {
		d.died.Store(true)
		return errDead
	}
	return nil
}

func (d *dying) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	if err := d.gate(o); err != nil {
		return err
	}
	return d.Client.Create(ctx, o, opts...)
}

func (d *dying) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	if err := d.gate(o); err != nil {
		return err
	}
	return d.Client.Update(ctx, o, opts...)
}

func (d *dying) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	if err := d.gate(o); err != nil {
		return err
	}
	return d.Client.Patch(ctx, o, p, opts...)
}

func (d *dying) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	if err := d.gate(o); err != nil {
		return err
	}
	return d.Client.Delete(ctx, o, opts...)
}

func (d *dying) Status() client.SubResourceWriter {
	return &dyingStatus{SubResourceWriter: d.Client.Status(), d: d}
}

type dyingStatus struct {
	client.SubResourceWriter
	d *dying
}

func (s *dyingStatus) Update(ctx context.Context, o client.Object, opts ...client.SubResourceUpdateOption) error {
	if err := s.d.gate(o); err != nil {
		return err
	}
	return s.SubResourceWriter.Update(ctx, o, opts...)
}

func (s *dyingStatus) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	if err := s.d.gate(o); err != nil {
		return err
	}
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}

// runManager starts a manager for ns and returns a function that stops it.
func runManager(t *testing.T, o controllers.Options) func() {
	t.Helper()
	mgr, err := controllers.NewManager(env.Config, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// A rotation writes three times: the new hash into status, the new secret into the Secret, the
// old hash's expiry into status. For every k, the manager dies after k of them; a new manager
// must finish that one rotation, and at no instant may the Secret carry a secret that status did
// not accept first.
func TestARotationInterruptedAfterAnyWriteIsFinishedOnceByTheNextManager(t *testing.T) {
	interruptedAfterEveryWrite(t, func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Trigger = "v2" },
		func(o *m2mv1alpha1.M2MClient) bool { return o.Status.LastRotationTrigger == "v2" },
		func(t *testing.T, obj *m2mv1alpha1.M2MClient, s1, final string) {
			// No rotation is left half-done: one current secret, the rest expiring.
			for _, e := range obj.Status.AcceptedSecrets {
				if e.Hash != credentials.Hash(final) && e.ExpiresAt == nil {
					t.Fatalf("an old secret never expires: %+v", obj.Status.AcceptedSecrets)
				}
			}
			if got := tokenStatus(t, obj.Status.ClientID, s1); got != http.StatusOK {
				t.Fatalf("the secret pods held before the rotation was refused (%d) during its grace period", got)
			}
		})
}

// A revocation writes as a rotation does: the new hash (with revocationPending), the Secret, and
// then the earlier hashes dropped. Wherever the manager dies, the next one finishes it as a
// revocation: the secret held before is refused at once, not after the grace period.
func TestARevocationInterruptedAfterAnyWriteIsFinishedOnceAsARevocationByTheNextManager(t *testing.T) {
	interruptedAfterEveryWrite(t, func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.RevokeTrigger = "leak-1" },
		func(o *m2mv1alpha1.M2MClient) bool {
			return o.Status.LastRevokeTrigger == "leak-1" && !o.Status.RevocationPending && o.Status.LastRevocationTime != nil
		},
		func(t *testing.T, obj *m2mv1alpha1.M2MClient, s1, final string) {
			if len(obj.Status.AcceptedSecrets) != 1 || obj.Status.AcceptedSecrets[0].Hash != credentials.Hash(final) {
				t.Fatalf("the revocation left earlier entries: %+v", obj.Status.AcceptedSecrets)
			}
			tokenEventually(t, obj.Status.ClientID, s1, http.StatusUnauthorized)
		})
}

// startDyingManager starts a manager for ns whose writes fail after the k-th once d.armed is set.
func startDyingManager(t *testing.T, ns string, k int) (d *dying, stop func()) {
	t.Helper()
	o := managerOptions(ns)
	o.WrapClient = func(c client.Client) client.Client {
		d = &dying{Client: c, k: int64(k), armed: &atomic.Bool{}}
		return d
	}
	stop = runManager(t, o)
	return d, stop
}

// interruptedAfterEveryWrite makes a client, arms a manager to die after its k-th write, asks
// (ask) for one rotation, and lets a new manager finish it, for k from 0 to 3. done says when
// the client has acted on what was asked; check judges the client, the secret before and the
// secret after.
func interruptedAfterEveryWrite(t *testing.T, ask func(*m2mv1alpha1.M2MClient), done func(*m2mv1alpha1.M2MClient) bool, check func(t *testing.T, obj *m2mv1alpha1.M2MClient, s1, final string)) {
	for k := 0; k <= 3; k++ {
		t.Run(fmt.Sprintf("the manager dies after %d writes", k), func(t *testing.T) {
			ns := testenv.Namespace(t, env.Client)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			recorded, err := testenv.RecordCredentials(ctx, env.Config, ns)
			if err != nil {
				t.Fatal(err)
			}

			first, stopFirst := startDyingManager(t, ns, k)
			key := create(t, rotatingClient(ns, "c", func(o *m2mv1alpha1.M2MClient) {
				o.Spec.Rotation.Trigger = "v1"
				o.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: time.Hour}
			}))
			obj, s1 := settled(t, key, nil)
			id := obj.Status.ClientID

			first.armed.Store(true)
			update(t, key, ask)
			if k < 3 {
				testenv.Eventually(t, wait, func() error {
					if !first.died.Load() {
						return fmt.Errorf("the manager has not reached its last write")
					}
					return nil
				})
			} else {
				// All three writes go through: the rotation completes before the "death".
				settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
					if s == s1 {
						return fmt.Errorf("not rotated")
					}
					return nil
				})
			}
			stopFirst()

			runManager(t, managerOptions(ns))
			obj, final := settled(t, key, func(o *m2mv1alpha1.M2MClient, s string) error {
				if s == s1 || !done(o) {
					return fmt.Errorf("the rotation asked for is not finished")
				}
				return nil
			})
			check(t, obj, s1, final)
			tokenEventually(t, id, final, http.StatusOK)

			time.Sleep(300 * time.Millisecond) // let the last watch events arrive
			secretVersions, clientVersions := recorded()
			checked, err := testenv.AcceptedBefore(secretVersions, clientVersions, func(o client.Object, secret string) bool {
				return credentials.Verify(o.(*m2mv1alpha1.M2MClient).Status.AcceptedSecrets, secret, clk.Now())
			})
			if err != nil {
				t.Fatal(err)
			}
			if checked == 0 {
				t.Fatal("no Secret version was observed")
			}
			// One rotation: the Secret held exactly two secrets over its life.
			values := map[string]bool{}
			for _, v := range secretVersions {
				if s, ok := v.Object.(*corev1.Secret); ok {
					values[string(s.Data[m2mv1alpha1.SecretKeyClientSecret])] = true
				}
			}
			if len(values) != 2 {
				t.Fatalf("the Secret held %d different secrets; one rotation makes 2", len(values))
			}
		})
	}
}
